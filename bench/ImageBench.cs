using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using SecureVmm.Policy.Images;
using SecureVmm.Policy.Keys;

namespace SecureVmm.Bench;

/// <summary>
/// Image verification throughput: `dotnet run -c Release --project bench -- image [MiB]`.
/// Packs and signs an image with a payload of the given size (default 1024 MiB), then times
/// ImageLoader.LoadVerified — read once into memory, SHA-256 as it arrives, signature check —
/// from a warm page cache, and prints GB/s next to the raw SHA-256 speed of this machine.
/// Target (issue 6): at least 1 GB/s.
/// </summary>
public static class ImageBench
{
    public static int Run(string[] args)
    {
        int mib = args.Length > 0 ? int.Parse(args[0], CultureInfo.InvariantCulture) : 1024;
        long size = (long)mib << 20;
        string dir = Directory.CreateTempSubdirectory("svmm-image-bench").FullName;
        try
        {
            string payload = Path.Combine(dir, "payload.bin");
            byte[] block = new byte[1 << 20];
            new Random(1).NextBytes(block);
            using (var output = File.Create(payload))
            {
                for (long written = 0; written < size; written += block.Length)
                {
                    output.Write(block, 0, (int)Math.Min(block.Length, size - written));
                }
            }
            var key = Ed25519SecretKey.Generate();
            string image = Path.Combine(dir, "bench.svmi");
            ImageBundle.Pack(image, "bench", 1, ImageKind.Flat, true, "", 0x100000, 0x100000,
                [new ImageBundle.PackInput(PayloadRole.Kernel, payload)], DateTimeOffset.UtcNow);
            ImageBundle.Sign(image, key);
            File.Delete(payload);

            // Raw SHA-256 over memory, the ceiling for verification on this machine.
            double shaSeconds = Time(() => SHA256.HashData(block.AsSpan()), 256);
            double shaGBps = 256.0 * block.Length / shaSeconds / 1e9;

            ImageLoader.LoadVerified(image, [key.PublicKey], null, null); // warm the page cache and the JIT
            // Wall-clock time depends on what else the machine runs; CPU time (user + system, this
            // process) shows what one unshared core achieves. Both are printed.
            double best = double.MaxValue, bestCpu = double.MaxValue;
            using var process = Process.GetCurrentProcess();
            for (int run = 0; run < 3; run++)
            {
                GC.Collect();
                process.Refresh();
                var cpuBefore = process.TotalProcessorTime;
                var stopwatch = Stopwatch.StartNew();
                var verified = ImageLoader.LoadVerified(image, [key.PublicKey], null, null);
                stopwatch.Stop();
                process.Refresh();
                GC.KeepAlive(verified);
                best = Math.Min(best, stopwatch.Elapsed.TotalSeconds);
                bestCpu = Math.Min(bestCpu, (process.TotalProcessorTime - cpuBefore).TotalSeconds);
            }
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"image verify: {mib} MiB payload in {best * 1000:F0} ms wall = {size / best / 1e9:F2} GB/s; " +
                $"{bestCpu * 1000:F0} ms CPU = {size / bestCpu / 1e9:F2} GB/s per CPU-second (best of 3, warm page cache)"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"sha-256 in memory (wall clock): {shaGBps:F2} GB/s; load average now {LoadAverage()}"));
            Console.WriteLine($"target: >= 1 GB/s");
            return 0;
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    private static string LoadAverage()
    {
        try
        {
            return File.ReadAllText("/proc/loadavg").Split(' ')[0];
        }
        catch (IOException)
        {
            return "unknown";
        }
    }

    private static double Time(Action action, int count)
    {
        action();
        var stopwatch = Stopwatch.StartNew();
        for (int i = 0; i < count; i++)
        {
            action();
        }
        return stopwatch.Elapsed.TotalSeconds;
    }
}
