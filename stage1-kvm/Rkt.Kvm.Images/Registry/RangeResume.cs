using System.Net;
using System.Net.Http.Headers;

namespace Rkt.Kvm.Images.Registry;

/// <summary>
/// A download to continue: the first <see cref="Offset"/> bytes are in the caller's file. Asked as
/// <c>Range: bytes=OFFSET-</c>, with <c>If-Range: VALIDATOR</c> when the file came with one (the
/// server's strong ETag, else its Last-Modified), so that a server whose file changed sends it whole.
/// A blob named by its digest needs no validator.
/// </summary>
internal sealed record ResumeFrom(long Offset, string? Validator)
{
    public void AddTo(HttpRequestMessage request)
    {
        request.Headers.Range = new RangeHeaderValue(Offset, null);
        if (Validator is null) return;
        if (Validator.StartsWith('"')) request.Headers.IfRange = new RangeConditionHeaderValue(new EntityTagHeaderValue(Validator));
        else request.Headers.TryAddWithoutValidation("If-Range", Validator);
    }
}

/// <summary>
/// How an answer to a request that may have carried a <see cref="ResumeFrom"/> goes on (rkt's
/// resumable session, with the check made by the server through If-Range rather than by a HEAD
/// first): a 206 whose <c>Content-Range</c> starts where the file ends continues it; a 200 (the server
/// ignores ranges, or its file changed) starts the file again; a 416, a 206 for another range or with
/// another ETag, means the part held is of no use: the caller drops it and asks for the whole.
/// </summary>
internal static class RangeResume
{
    /// <returns>where the response's body goes in the file (0: from the start, truncating it), or
    /// null when the part held must be dropped and the whole asked for.</returns>
    public static long? Start(HttpResponseMessage response, ResumeFrom? resume)
    {
        if (resume is null) return 0;
        if (response.StatusCode == HttpStatusCode.RequestedRangeNotSatisfiable) return null;
        if (response.StatusCode != HttpStatusCode.PartialContent) return 0;
        var range = response.Content.Headers.ContentRange;
        if (range is not { Unit: "bytes", From: { } from } || from != resume.Offset) return null;
        if (resume.Validator is { } v && v.StartsWith('"') && response.Headers.ETag is { } etag && etag.ToString() != v) return null;
        return resume.Offset;
    }

    /// <summary>What a later request may send as If-Range for the body of <paramref name="response"/>:
    /// its strong ETag, else its Last-Modified; null when it has neither (such a download is not continued).</summary>
    public static string? Validator(HttpResponseMessage response) =>
        response.Headers.ETag is { IsWeak: false } etag ? etag.ToString()
        : response.Content.Headers.TryGetValues("Last-Modified", out var lastModified) ? lastModified.FirstOrDefault()
        : null;
}
