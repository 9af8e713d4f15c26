using System.Diagnostics;
using System.Text;
using SecureVmm.Tcb.Cpu;

namespace SecureVmm.Tests.Cpu.Differential;

/// <summary>Runs a differential guest image on SecureVmm and on qemu-system-i386 and returns both serial outputs.</summary>
public static class DifferentialRunner
{
    public const string QemuPath = "/usr/bin/qemu-system-i386";

    public static bool QemuAvailable => File.Exists(QemuPath) || FindOnPath("qemu-system-i386") is not null;

    private static string? FindOnPath(string exe)
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':'))
        {
            var p = Path.Combine(dir, exe);
            if (File.Exists(p)) return p;
        }
        return null;
    }

    /// <summary>Loads the image at its Multiboot load address and enters flat protected mode at the entry with EAX=0x2BADB002.</summary>
    public static string RunOnSecureVmm(byte[] image, long budget = 50_000_000)
    {
        using var h = new CpuHarness(ramMiB: 16);
        h.RecordExits = false;
        h.Load(GuestProgram.LoadAddress, image);
        h.Cpu.EnterFlatProtectedMode(GuestProgram.EntryAddress, eax: 0x2BADB002, ebx: 0);
        var status = h.Run(budget);
        if (status != RunStatus.Stopped)
        {
            h.Serial.Append($"\n[securevmm: run ended with {status} at EIP {h.Cpu.Eip:X8}]\n");
        }
        return h.Serial.ToString();
    }

    public static string RunOnQemu(byte[] image)
    {
        string exe = File.Exists(QemuPath) ? QemuPath : FindOnPath("qemu-system-i386")!;
        string file = Path.Combine(Path.GetTempPath(), $"securevmm-diff-{Environment.ProcessId}-{Guid.NewGuid():N}.bin");
        string serialFile = file + ".serial";
        File.WriteAllBytes(file, image);
        string? keep = Environment.GetEnvironmentVariable("SECUREVMM_DIFF_KEEP");
        if (!string.IsNullOrEmpty(keep))
        {
            // Debugging aid: keep a copy of each image to rerun by hand.
            File.Copy(file, Path.Combine(keep, $"diff-{image.Length}.bin"), overwrite: true);
        }
        try
        {
            var psi = new ProcessStartInfo(exe)
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                RedirectStandardInput = true,
                UseShellExecute = false,
            };
            foreach (var arg in new[] { "-accel", "tcg", "-display", "none", "-serial", "file:" + serialFile, "-monitor", "none",
                "-no-reboot", "-m", "32", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-kernel", file })
            {
                psi.ArgumentList.Add(arg);
            }
            using var p = Process.Start(psi)!;
            var stdout = p.StandardOutput.ReadToEndAsync();
            var stderr = p.StandardError.ReadToEndAsync();
            if (!p.WaitForExit(60_000))
            {
                p.Kill(entireProcessTree: true);
                return stdout.Result + "\n[qemu: timed out]\n";
            }
            string err = stderr.Result;
            // The serial port goes to a file: QEMU's stdio backend may drop output when a pipe is full.
            string serial = File.Exists(serialFile) ? File.ReadAllText(serialFile) : "";
            var sb = new StringBuilder(serial.Replace("\r\n", "\n", StringComparison.Ordinal));
            if (p.ExitCode != 1)
            {
                sb.Append($"\n[qemu: exit status {p.ExitCode} {err.Trim()}]\n");
            }
            return sb.ToString();
        }
        finally
        {
            File.Delete(file);
            File.Delete(serialFile);
        }
    }

    /// <summary>Describes the first difference between two outputs with the case it belongs to, or null when equal.</summary>
    /// <summary>
    /// Builds <paramref name="images"/> generated images (seeds from <paramref name="baseSeed"/>), runs each here and,
    /// when <paramref name="qemu"/> is given, under QEMU, and fails on the first difference with the case's listing.
    /// </summary>
    public static void CompareGenerated(Xunit.Abstractions.ITestOutputHelper output, string? qemu, string label, int baseSeed, int images,
        Func<int, (GuestProgram Program, List<string> Listings)> build, string dumpOrder)
    {
        for (int k = 0; k < images; k++)
        {
            int seed = baseSeed + k;
            var (program, listings) = build(seed);
            byte[] image = program.Build();
            string ours = RunOnSecureVmm(image);
            Xunit.Assert.True(ours.EndsWith("done\n", StringComparison.Ordinal), $"{label} seed {seed}: SecureVmm did not finish: {ours[Math.Max(0, ours.Length - 400)..]}");
            if (qemu is null)
            {
                output.WriteLine($"{label} seed {seed}: SecureVmm ran {program.CaseCount} cases; no comparison without QEMU.");
                continue;
            }
            string? diff = FirstDifference(RunOnQemu(image), ours);
            if (diff is not null)
            {
                var m = System.Text.RegularExpressions.Regex.Match(diff, @"in case (\d+) ");
                string listing = m.Success && int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) is int i && i < listings.Count ? listings[i] : "";
                Xunit.Assert.Fail($"{label} seed {seed}: {diff}\n(dump order: {dumpOrder})\n{listing}");
            }
            output.WriteLine($"{label} seed {seed}: {program.CaseCount} cases, {ours.Length} bytes of output identical on SecureVmm and QEMU");
        }
    }

    public static string? FirstDifference(string expected, string actual)
    {
        var e = expected.Split('\n');
        var a = actual.Split('\n');
        string currentCase = "(prologue)";
        for (int i = 0; i < Math.Max(e.Length, a.Length); i++)
        {
            string el = i < e.Length ? e[i] : "<end>";
            string al = i < a.Length ? a[i] : "<end>";
            if (el.StartsWith("case ", StringComparison.Ordinal)) currentCase = el;
            if (el != al)
            {
                var context = new StringBuilder();
                int start = Math.Max(0, i - 10);
                for (int j = start; j <= Math.Min(i + 3, Math.Max(e.Length, a.Length) - 1); j++)
                {
                    context.Append($"  qemu: {(j < e.Length ? e[j] : "<end>"),-40} securevmm: {(j < a.Length ? a[j] : "<end>")}\n");
                }
                return $"first difference at line {i + 1} in {currentCase}:\n{context}";
            }
        }
        return null;
    }
}
