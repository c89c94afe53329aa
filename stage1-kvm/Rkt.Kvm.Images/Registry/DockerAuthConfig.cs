using System.Text.Json;
using System.Text.Json.Serialization;

namespace Rkt.Kvm.Images.Registry;

/// <summary>A user name and password for one registry.</summary>
public sealed record BasicCredentials(string User, string Password)
{
    public string HeaderValue => Convert.ToBase64String(System.Text.Encoding.UTF8.GetBytes($"{User}:{Password}"));

    /// <summary>Never the password: this record may end up in a debug log.</summary>
    public override string ToString() => $"{User}:***";
}

/// <summary>
/// rkt's registry credentials: every <c>auth.d/*.json</c> of the configuration directories whose
/// <c>rktKind</c> is <c>dockerAuth</c>:
/// <c>{"rktKind":"dockerAuth","rktVersion":"v1","registries":["host[:port]"],"credentials":{"user":"…","password":"…"}}</c>.
/// As in rkt, later directories (the local one, <c>--local-config</c>) override earlier ones (the
/// system one); other kinds of auth file are left alone.
/// </summary>
public sealed class DockerAuthConfig
{
    private readonly Dictionary<string, BasicCredentials> _byRegistry = new(StringComparer.OrdinalIgnoreCase);

    public static DockerAuthConfig Empty => new();

    public static DockerAuthConfig Load(params string[] configDirs)
    {
        var config = new DockerAuthConfig();
        foreach (var dir in configDirs)
        {
            var authDir = Path.Join(dir, "auth.d");
            if (!Directory.Exists(authDir)) continue;
            foreach (var file in Directory.EnumerateFiles(authDir, "*.json").Order(StringComparer.Ordinal))
                config.Add(file);
        }
        return config;
    }

    private void Add(string file)
    {
        AuthFile? parsed;
        try { parsed = JsonSerializer.Deserialize<AuthFile>(File.ReadAllBytes(file)); }
        catch (JsonException e) { throw new ImageException($"the auth configuration {file} is not valid JSON: {e.Message}", e); }
        if (parsed?.Kind != "dockerAuth") return;
        if (parsed.Version != "v1") throw new ImageException($"the auth configuration {file} has rktVersion \"{parsed.Version}\"; only v1 is known");
        if (parsed.Credentials is not { User: { } user, Password: { } password })
            throw new ImageException($"the auth configuration {file} has no credentials user and password");
        if (parsed.Registries is not { Count: > 0 }) throw new ImageException($"the auth configuration {file} names no registries");
        foreach (var registry in parsed.Registries) _byRegistry[Normalize(registry)] = new BasicCredentials(user, password);
    }

    /// <summary>The credentials for a registry host (with its port, if any), or null.</summary>
    public BasicCredentials? For(string registry) => _byRegistry.GetValueOrDefault(Normalize(registry));

    /// <summary>Docker Hub answers to several names; rkt users write any of them.</summary>
    private static string Normalize(string registry) => registry is "docker.io" or "index.docker.io" ? ImageReference.DockerHub : registry;

    private sealed class AuthFile
    {
        [JsonPropertyName("rktKind")] public string? Kind { get; set; }
        [JsonPropertyName("rktVersion")] public string? Version { get; set; }
        [JsonPropertyName("registries")] public List<string>? Registries { get; set; }
        [JsonPropertyName("credentials")] public AuthCredentials? Credentials { get; set; }
    }

    private sealed class AuthCredentials
    {
        [JsonPropertyName("user")] public string? User { get; set; }
        [JsonPropertyName("password")] public string? Password { get; set; }
    }
}
