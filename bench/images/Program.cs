using System.Diagnostics;
using System.Globalization;
using System.IO.Compression;
using System.Text.Json.Nodes;
using Rkt.Kvm.Images.Store;
using Rkt.Kvm.Images.Trees;

[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]

namespace Rkt.Kvm.Bench.Images;

/// <summary>
/// Times, on one OCI image (run.sh builds it), in each run: GNU tar extracting the layers in
/// order (tar -xzpf, so gzip decompresses as for us), our import (digests, validation, copy into
/// the store), our first render (tree store render + export) and our second, cached render.
/// Each figure is the best of the runs; MB/s are of uncompressed layer bytes. Ends with RESULT
/// lines. Targets: first render at least 0.8x GNU tar's speed; cached render 10x faster.
/// </summary>
public static class Program
{
    public static int Main(string[] args)
    {
        string layout = Arg(args, "--layout"), reference = Arg(args, "--ref"), work = Arg(args, "--work");
        int runs = int.Parse(Arg(args, "--runs"), CultureInfo.InvariantCulture);
        var layers = LayerBlobs(layout, reference);
        long tarBytes = layers.Sum(UncompressedSize);
        long gzBytes = layers.Sum(l => new FileInfo(l).Length);
        double mb = tarBytes / 1e6;
        Console.WriteLine($"image: {layers.Count} layers, {gzBytes / 1e6:F1} MB gzip, {mb:F1} MB of tar");

        double tar = double.MaxValue, import = double.MaxValue, first = double.MaxValue, cached = double.MaxValue;
        for (int run = 1; run <= runs; run++)
        {
            var dir = Path.Join(work, $"run-{run}");
            Directory.CreateDirectory(dir);

            var gnu = Path.Join(dir, "gnu-tar");
            Directory.CreateDirectory(gnu);
            var t = Time(() => { foreach (var layer in layers) Run("tar", "-xzpf", layer, "-C", gnu, "--same-owner"); });

            var store = new ImageStore(Path.Join(dir, "data"));
            ImageRecord image = null!;
            var i = Time(() => image = new ImageImporter(store).Import(layout, new ImportOptions(Reference: reference)));
            var trees = new TreeStore(store);
            var f = Time(() => trees.Export(image, Path.Join(dir, "first"), ExportMode.Hardlink, rootfsOnly: true));
            // A cached render is short and easily disturbed: take the best of three per run.
            var c = Enumerable.Range(0, 3).Min(k => Time(() => trees.Export(image, Path.Join(dir, $"cached-{k}"), ExportMode.Hardlink, rootfsOnly: true)));

            var (gnuFiles, gnuSize) = Census(gnu);
            var (ourFiles, ourSize) = Census(Path.Join(dir, "cached-2"));
            if ((gnuFiles, gnuSize) != (ourFiles, ourSize))
                throw new InvalidOperationException($"trees differ: GNU tar {gnuFiles} entries/{gnuSize} bytes, ours {ourFiles}/{ourSize}");
            Console.WriteLine($"run {run}: GNU tar {t:F3} s | import {i:F3} s | first render {f:F3} s | cached render {c:F3} s  ({ourFiles} entries, {ourSize / 1e6:F1} MB)");
            (tar, import, first, cached) = (Math.Min(tar, t), Math.Min(import, i), Math.Min(first, f), Math.Min(cached, c));
        }
        // Deleted only now: freeing ~300 MB (the disk is mounted with discard) slows the
        // filesystem for seconds afterwards, which would land in the next run's timings.
        for (int run = 1; run <= runs; run++) Directory.Delete(Path.Join(work, $"run-{run}"), recursive: true);

        Console.WriteLine();
        Console.WriteLine($"GNU tar -xzpf:        {tar:F3} s  {mb / tar,7:F1} MB/s");
        Console.WriteLine($"ours import:          {import:F3} s  {mb / import,7:F1} MB/s");
        Console.WriteLine($"ours first render:    {first:F3} s  {mb / first,7:F1} MB/s  {tar / first:F2}x GNU tar's speed (target >= 0.8x)");
        Console.WriteLine($"ours import + render: {import + first:F3} s  {mb / (import + first),7:F1} MB/s  {tar / (import + first):F2}x GNU tar's speed");
        Console.WriteLine($"ours cached render:   {cached:F3} s  {first / cached:F1}x faster than the first (target >= 10x)");
        Console.WriteLine($"RESULT first_render ours={mb / first:F1}MB/s ref={mb / tar:F1}MB/s ratio={tar / first:F2}");
        Console.WriteLine($"RESULT import_and_render ours={mb / (import + first):F1}MB/s ref={mb / tar:F1}MB/s ratio={tar / (import + first):F2}");
        Console.WriteLine($"RESULT import ours={mb / import:F1}MB/s");
        Console.WriteLine($"RESULT cached_render ours={cached:F3}s ref={first:F3}s ratio={cached / first:F3}");
        return 0;
    }

    private static string Arg(string[] args, string name) =>
        args.SkipWhile(a => a != name).Skip(1).FirstOrDefault() ?? throw new ArgumentException($"missing {name}");

    private static double Time(Action action)
    {
        Run("sync"); // earlier writes flushing must not land in the next timing
        var sw = Stopwatch.StartNew();
        action();
        return sw.Elapsed.TotalSeconds;
    }

    private static void Run(string tool, params string[] args)
    {
        using var p = Process.Start(tool, args);
        p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException($"{tool} exited {p.ExitCode}");
    }

    private static List<string> LayerBlobs(string layout, string reference)
    {
        string Blob(string digest) => Path.Join(layout, "blobs", "sha256", digest["sha256:".Length..]);
        var index = JsonNode.Parse(File.ReadAllText(Path.Join(layout, "index.json")))!;
        var desc = index["manifests"]!.AsArray().First(m => (string?)m!["annotations"]?["org.opencontainers.image.ref.name"] == reference)!;
        var manifest = JsonNode.Parse(File.ReadAllText(Blob((string)desc["digest"]!)))!;
        return manifest["layers"]!.AsArray().Select(l => Blob((string)l!["digest"]!)).ToList();
    }

    private static long UncompressedSize(string gz)
    {
        using var s = new GZipStream(File.OpenRead(gz), CompressionMode.Decompress);
        long n = 0;
        var buffer = new byte[1 << 16];
        for (int r; (r = s.Read(buffer)) > 0;) n += r;
        return n;
    }

    private static (int Entries, long Bytes) Census(string root)
    {
        int entries = 0;
        long bytes = 0;
        foreach (var info in new DirectoryInfo(root).EnumerateFileSystemInfos("*", new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = 0 }))
        {
            entries++;
            if (info is FileInfo { LinkTarget: null } file) bytes += file.Length;
        }
        return (entries, bytes);
    }
}
