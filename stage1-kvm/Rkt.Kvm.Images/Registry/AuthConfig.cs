using System.Net.Http.Headers;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Rkt.Kvm.Images.Registry;

/// <summary>A user name and password for one registry or host.</summary>
public sealed record BasicCredentials(string User, string Password)
{
    public string HeaderValue => Convert.ToBase64String(System.Text.Encoding.UTF8.GetBytes($"{User}:{Password}"));

    /// <summary>Never the password: this record may end up in a debug log.</summary>
    public override string ToString() => $"{User}:***";
}

/// <summary>What an <c>auth</c> file gives one host: the Authorization header of each request to it.</summary>
public sealed class HostCredentials
{
    private readonly string _scheme;
    private readonly string _parameter;

    private HostCredentials(string scheme, string parameter) { _scheme = scheme; _parameter = parameter; }

    public static HostCredentials Basic(BasicCredentials credentials) => new("Basic", credentials.HeaderValue);

    /// <summary>rkt's <c>oauth</c> type: a bearer token.</summary>
    public static HostCredentials Bearer(string token) => new("Bearer", token);

    public AuthenticationHeaderValue Header => new(_scheme, _parameter);

    /// <summary>Never the secret.</summary>
    public override string ToString() => $"{_scheme} ***";
}

/// <summary>
/// rkt's credentials: every <c>auth.d/*.json</c> of the configuration directories, of either kind rkt
/// reads there:
/// <list type="bullet">
/// <item><c>dockerAuth</c>, for registries (<c>docker://</c>):
/// <c>{"rktKind":"dockerAuth","rktVersion":"v1","registries":["host[:port]"],"credentials":{"user":"…","password":"…"}}</c>;</item>
/// <item><c>auth</c>, for appc discovery, ACIs, signatures and keys: an Authorization header per host,
/// <c>{"rktKind":"auth","rktVersion":"v1","domains":["example.com"],"type":"basic","credentials":{"user":"…","password":"…"}}</c>
/// or <c>"type":"oauth","credentials":{"token":"…"}</c> (sent as <c>Bearer</c>).</item>
/// </list>
/// As in rkt, later directories (the local one, <c>--local-config</c>) override earlier ones (the
/// system one), and one directory naming a registry or domain twice is an error; other kinds of file
/// are left alone.
/// </summary>
public sealed class AuthConfig
{
    private readonly Dictionary<string, BasicCredentials> _byRegistry = new(StringComparer.OrdinalIgnoreCase);
    private readonly Dictionary<string, HostCredentials> _byHost = new(StringComparer.OrdinalIgnoreCase);

    public static AuthConfig Empty => new();

    public static AuthConfig Load(params string[] configDirs)
    {
        var config = new AuthConfig();
        foreach (var dir in configDirs)
        {
            var authDir = Path.Join(dir, "auth.d");
            if (!Directory.Exists(authDir)) continue;
            var own = new AuthConfig();
            foreach (var file in Directory.EnumerateFiles(authDir, "*.json").Order(StringComparer.Ordinal))
                own.Add(file);
            foreach (var (registry, credentials) in own._byRegistry) config._byRegistry[registry] = credentials;
            foreach (var (host, credentials) in own._byHost) config._byHost[host] = credentials;
        }
        return config;
    }

    private void Add(string file)
    {
        AuthFile? parsed;
        try { parsed = JsonSerializer.Deserialize<AuthFile>(File.ReadAllBytes(file)); }
        catch (JsonException e) { throw new ImageException($"the auth configuration {file} is not valid JSON: {e.Message}", e); }
        if (parsed?.Kind is not ("dockerAuth" or "auth")) return;
        if (parsed.Version != "v1") throw new ImageException($"the auth configuration {file} has rktVersion \"{parsed.Version}\"; only v1 is known");
        if (parsed.Kind == "dockerAuth")
        {
            var basic = BasicOf(parsed, file);
            if (parsed.Registries is not { Count: > 0 }) throw new ImageException($"the auth configuration {file} names no registries");
            foreach (var registry in parsed.Registries) AddOnce(_byRegistry, Normalize(registry), basic, file, "registry");
            return;
        }
        if (parsed.Domains is not { Count: > 0 }) throw new ImageException($"the auth configuration {file} names no domains");
        var credentials = parsed.Type switch
        {
            "basic" => HostCredentials.Basic(BasicOf(parsed, file)),
            "oauth" => parsed.Credentials is { Token: { Length: > 0 } token }
                ? HostCredentials.Bearer(token)
                : throw new ImageException($"the auth configuration {file} has no credentials token (type oauth)"),
            null or "" => throw new ImageException($"the auth configuration {file} has no type (basic or oauth)"),
            var other => throw new ImageException($"the auth configuration {file} has the unknown type \"{other}\" (basic or oauth)"),
        };
        foreach (var domain in parsed.Domains) AddOnce(_byHost, domain, credentials, file, "domain");
    }

    private static BasicCredentials BasicOf(AuthFile parsed, string file) =>
        parsed.Credentials is { User: { Length: > 0 } user, Password: { Length: > 0 } password }
            ? new BasicCredentials(user, password)
            : throw new ImageException($"the auth configuration {file} has no credentials user and password");

    private static void AddOnce<T>(Dictionary<string, T> map, string key, T value, string file, string what)
    {
        if (!map.TryAdd(key, value))
            throw new ImageException($"the auth configuration {file} gives credentials for {what} \"{key}\", which another file of {Path.GetDirectoryName(file)} gives already");
    }

    /// <summary>The credentials for a registry host (with its port, if any), or null.</summary>
    public BasicCredentials? For(string registry) => _byRegistry.GetValueOrDefault(Normalize(registry));

    /// <summary>
    /// The Authorization header an <c>auth</c> file gives for <paramref name="url"/>'s host (its port
    /// too, when the URL names one), or null. Only over https, or plain http when
    /// <c>--insecure-options=http</c> allows it: credentials never travel in the clear otherwise.
    /// </summary>
    public AuthenticationHeaderValue? HeaderFor(Uri url, InsecureOptions insecure)
    {
        if (url.Scheme != "https" && !(url.Scheme == "http" && insecure.HasFlag(InsecureOptions.Http))) return null;
        return _byHost.GetValueOrDefault(url.Authority)?.Header;
    }

    /// <summary>Docker Hub answers to several names; rkt users write any of them.</summary>
    private static string Normalize(string registry) => registry is "docker.io" or "index.docker.io" ? ImageReference.DockerHub : registry;

    private sealed class AuthFile
    {
        [JsonPropertyName("rktKind")] public string? Kind { get; set; }
        [JsonPropertyName("rktVersion")] public string? Version { get; set; }
        [JsonPropertyName("registries")] public List<string>? Registries { get; set; }
        [JsonPropertyName("domains")] public List<string>? Domains { get; set; }
        [JsonPropertyName("type")] public string? Type { get; set; }
        [JsonPropertyName("credentials")] public AuthCredentials? Credentials { get; set; }
    }

    private sealed class AuthCredentials
    {
        [JsonPropertyName("user")] public string? User { get; set; }
        [JsonPropertyName("password")] public string? Password { get; set; }
        [JsonPropertyName("token")] public string? Token { get; set; }
    }
}
