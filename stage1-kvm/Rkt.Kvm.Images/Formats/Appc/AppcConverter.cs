using System.Text.Json;
using Rkt.Kvm.Images.Formats.Oci;

namespace Rkt.Kvm.Images.Formats.Appc;

/// <summary>
/// Writes the appc image manifest rkt would have shown for an OCI or docker image (as its
/// docker2aci did): name from the repository, version label from the tag, os/arch labels, and
/// an app whose exec is Entrypoint + Cmd, with env, working directory, user/group, ports and
/// volumes. The docker annotations keep what appc has no field for.
/// </summary>
public static class AppcConverter
{
    public static AppcImageManifest Convert(LayeredImage image, string? nameOverride, string fallbackName)
    {
        var (repo, tag) = SplitReference(image.Reference);
        var name = nameOverride ?? repo ?? fallbackName;
        if (!AcIdentifier.IsValid(name))
        {
            if (nameOverride is not null) throw new ImageException($"--name \"{nameOverride}\" is not a valid AC identifier");
            name = AcIdentifier.Sanitize(name);
        }
        var cfg = image.Config.Config ?? new ContainerConfig();
        var labels = new List<AppcNameValue> { new("version", tag ?? "latest"), new("os", image.Config.Os ?? "linux") };
        if (AppcArch(image.Config.Architecture) is { } arch) labels.Add(new("arch", arch));

        var annotations = new List<AppcNameValue>();
        if (repo is not null) annotations.Add(new("appc.io/docker/repository", repo));
        if (tag is not null) annotations.Add(new("appc.io/docker/tag", tag));
        annotations.Add(new("appc.io/docker/imageid", image.ConfigDigest.ToString()));
        if (cfg.Entrypoint is { Count: > 0 }) annotations.Add(new("appc.io/docker/entrypoint", JsonSerializer.Serialize(cfg.Entrypoint)));
        if (cfg.Cmd is { Count: > 0 }) annotations.Add(new("appc.io/docker/cmd", JsonSerializer.Serialize(cfg.Cmd)));
        if (image.Config.Created is { } created) annotations.Add(new("created", created));

        var exec = (cfg.Entrypoint ?? []).Concat(cfg.Cmd ?? []).ToList();
        var (user, group) = SplitUser(cfg.User);
        var app = exec.Count == 0 ? null : new AppcApp
        {
            Exec = exec,
            User = user,
            Group = group,
            WorkingDirectory = string.IsNullOrEmpty(cfg.WorkingDir) ? null : cfg.WorkingDir,
            Environment = (cfg.Env ?? []).Select(SplitEnv).ToList(),
            Ports = (cfg.ExposedPorts?.Keys ?? Enumerable.Empty<string>()).Order(StringComparer.Ordinal).Select(ParsePort).ToList(),
            MountPoints = (cfg.Volumes?.Keys ?? Enumerable.Empty<string>()).Order(StringComparer.Ordinal)
                .Select(p => new AppcMountPoint("volume-" + AcIdentifier.Sanitize(p.Replace('/', '-')), p, false)).ToList(),
        };
        return new AppcImageManifest { Name = name, Labels = labels, App = app, Annotations = annotations };
    }

    /// <summary>"registry/repo:tag" → (repo, tag); a bare OCI ref name like "latest" is a tag.</summary>
    public static (string? Repo, string? Tag) SplitReference(string? reference)
    {
        if (string.IsNullOrEmpty(reference)) return (null, null);
        int at = reference.IndexOf('@');
        if (at >= 0) reference = reference[..at];
        int colon = reference.LastIndexOf(':');
        bool hasTag = colon > reference.LastIndexOf('/');
        var repo = hasTag ? reference[..colon] : reference;
        var tag = hasTag ? reference[(colon + 1)..] : null;
        if (!reference.Contains('/') && !hasTag && at < 0) return (null, reference); // "latest": only a tag
        return (repo.Length == 0 ? null : repo, tag);
    }

    /// <summary>Docker's "user[:group]"; appc needs both, and docker's default is root.</summary>
    private static (string User, string Group) SplitUser(string? user)
    {
        if (string.IsNullOrEmpty(user)) return ("0", "0");
        int colon = user.IndexOf(':');
        return colon < 0 ? (user, "0") : (user[..colon], user[(colon + 1)..]);
    }

    private static AppcNameValue SplitEnv(string kv)
    {
        int eq = kv.IndexOf('=');
        return eq < 0 ? new(kv, "") : new(kv[..eq], kv[(eq + 1)..]);
    }

    /// <summary>"8080/tcp" → port 8080 named "8080-tcp", as docker2aci named them.</summary>
    private static AppcPort ParsePort(string spec)
    {
        var parts = spec.Split('/');
        var protocol = parts.Length > 1 ? parts[1] : "tcp";
        if (!int.TryParse(parts[0], out var port) || port is < 1 or > 65535)
            throw new ImageException($"the image config exposes an invalid port \"{spec}\"");
        return new AppcPort($"{port}-{protocol}", protocol, port, 1, false);
    }

    /// <summary>Go/OCI architecture names → appc's (appc says aarch64, i386, …).</summary>
    private static string? AppcArch(string? goArch) => goArch switch
    {
        null or "" => null,
        "arm64" => "aarch64",
        "386" => "i386",
        "arm" => "armv7l",
        _ => goArch,
    };
}
