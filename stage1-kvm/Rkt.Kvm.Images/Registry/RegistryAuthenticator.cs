using System.Net.Http.Headers;
using System.Text.Json;
using System.Text.Json.Serialization;
using Serilog;

namespace Rkt.Kvm.Images.Registry;

/// <summary>
/// Answers a registry's <c>WWW-Authenticate</c> challenge: <c>Basic</c> with the configured
/// credentials, <c>Bearer</c> by asking the challenge's realm for a token (anonymously, or with the
/// credentials as basic auth: the docker token flow). The header is kept for the rest of the
/// fetch. Credentials never travel over plain HTTP unless <c>--insecure-options=http</c>.
/// </summary>
internal sealed class RegistryAuthenticator(HttpClient client, ImageReference reference, RegistryOptions options)
{
    private const long MaxTokenBytes = 1 << 20;
    private static ILogger Log => Serilog.Log.ForContext<RegistryAuthenticator>();
    private readonly BasicCredentials? _credentials = options.Auth.For(reference.Registry);

    /// <summary>The Authorization header to send, once a challenge was answered.</summary>
    public AuthenticationHeaderValue? Header { get; private set; }

    public bool HasCredentials => _credentials is not null;

    public async Task Answer(AuthChallenge challenge, CancellationToken ct)
    {
        if (challenge.IsBasic)
        {
            Header = _credentials is null
                ? throw new ImageException($"registry {reference.Registry} requires credentials for {reference.Repository}: add a dockerAuth file to auth.d/ in --local-config")
                : new AuthenticationHeaderValue("Basic", _credentials.HeaderValue);
            return;
        }
        if (!challenge.IsBearer) throw new ImageException($"registry {reference.Registry} asks for \"{challenge.Scheme}\" authentication, which rkt-kvm does not speak (Basic and Bearer only)");
        Header = new AuthenticationHeaderValue("Bearer", await FetchToken(challenge, ct));
    }

    private async Task<string> FetchToken(AuthChallenge challenge, CancellationToken ct)
    {
        if (!Uri.TryCreate(challenge.Realm, UriKind.Absolute, out var realm) || realm.Scheme is not ("https" or "http"))
            throw new ImageException($"registry {reference.Registry} names an invalid token realm \"{challenge.Realm}\"");
        if (realm.Scheme == "http" && !options.Insecure.HasFlag(InsecureOptions.Http))
            throw new ImageException($"registry {reference.Registry} sends to a plain-HTTP token server {realm.Host}; allow it with --insecure-options=http");
        var query = new List<string>();
        if (challenge.Service is { } service) query.Add("service=" + Uri.EscapeDataString(service));
        query.Add("scope=" + Uri.EscapeDataString(challenge.Scope ?? $"repository:{reference.Repository}:pull"));
        var url = new UriBuilder(realm) { Query = string.Join('&', [.. query, .. (realm.Query.TrimStart('?') is { Length: > 0 } q ? new[] { q } : [])]) }.Uri;

        using var request = new HttpRequestMessage(HttpMethod.Get, url);
        if (_credentials is not null) request.Headers.Authorization = new AuthenticationHeaderValue("Basic", _credentials.HeaderValue);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(options.ResponseTimeout);
        using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, timeout.Token);
        Log.Debug("GET {Url} (token{WithCredentials}) -> {Status}", HttpSession.ForLog(url), _credentials is null ? "" : ", with credentials", (int)response.StatusCode);
        if ((int)response.StatusCode is 401 or 403)
            throw new ImageException(_credentials is null
                ? $"registry {reference.Registry} refused an anonymous token for {reference.Repository}: add a dockerAuth file to auth.d/ in --local-config"
                : $"registry {reference.Registry} refused the credentials of user \"{_credentials.User}\" for {reference.Repository}");
        if ((int)response.StatusCode == 429 || (int)response.StatusCode >= 500)
            throw new TransientRegistryException($"the token server {realm.Host} answered {(int)response.StatusCode}");
        if (!response.IsSuccessStatusCode)
            throw new ImageException($"the token server {realm.Host} of registry {reference.Registry} answered {(int)response.StatusCode} {response.ReasonPhrase}");
        var body = await HttpSession.ReadLimited(response, MaxTokenBytes, $"the token from {realm.Host}", timeout.Token);
        TokenResponse? parsed;
        try { parsed = JsonSerializer.Deserialize<TokenResponse>(body); }
        catch (JsonException e) { throw new ImageException($"the token server {realm.Host} sent invalid JSON: {e.Message}", e); }
        var token = parsed?.Token ?? parsed?.AccessToken;
        return string.IsNullOrEmpty(token) ? throw new ImageException($"the token server {realm.Host} sent no token") : token;
    }

    private sealed class TokenResponse
    {
        [JsonPropertyName("token")] public string? Token { get; set; }
        [JsonPropertyName("access_token")] public string? AccessToken { get; set; }
    }
}
