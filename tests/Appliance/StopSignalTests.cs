using System.Diagnostics;
using SecureVmm.Tcb.Audit;
using Xunit;
using Xunit.Abstractions;

namespace SecureVmm.Tests.Appliance;

/// <summary>Ctrl-C (SIGINT) and SIGTERM stop a running appliance cleanly: status 0, a summary, and logs that verify and end in VmStop.</summary>
public class StopSignalTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("INT")]
    [InlineData("TERM")]
    public async Task ASignalStopsEveryVmAndLeavesLogsThatVerify(string signal)
    {
        using var kit = new ApplianceTestKit();
        string shell = kit.GuestImage("interactive");
        string hog = kit.GuestImage("cpu-hog");
        string policy = kit.Policy(
            [ApplianceTestKit.Network("net-a", 1, level: "SECRET", colour: "red"), ApplianceTestKit.Network("net-b", 2)],
            [kit.Vm("alpha", shell, "net-a", "SECRET", "red"), kit.Vm("beta", hog, "net-b", devices: ["serial"])]);
        var info = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
        };
        foreach (string a in new[] { Path.Combine(AppContext.BaseDirectory, "securevmm.dll"), "run", policy, "--policy-key", kit.Builder.AdminPublicKeyPath,
            "--audit-key", kit.Builder.AuditSecretKeyPath, "--control", kit.Path("control.sock"), "--console", "lines" })
        {
            info.ArgumentList.Add(a);
        }
        using var process = Process.Start(info)!;
        var stdout = new System.Collections.Concurrent.ConcurrentQueue<string>();
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) { stdout.Enqueue(e.Data); } };
        process.BeginOutputReadLine();
        var stderr = process.StandardError.ReadToEndAsync();
        try
        {
            Assert.True(ApplianceTestKit.WaitFor(() => stdout.Any(l => l.StartsWith("[UNCLASSIFIED beta] cpu-hog", StringComparison.Ordinal))
                && stdout.Any(l => l.StartsWith("[SECRET alpha] SecureVmm interactive guest", StringComparison.Ordinal)), TimeSpan.FromSeconds(60)),
                "the VMs did not start: " + string.Join("\n", stdout));
            using (var kill = Process.Start("kill", [$"-{signal}", process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]))
            {
                kill.WaitForExit();
            }
            Assert.True(process.WaitForExit(TimeSpan.FromSeconds(60)), "the appliance did not stop after SIG" + signal);
        }
        finally
        {
            if (!process.HasExited)
            {
                process.Kill(true);
            }
        }
        string err = await stderr;
        output.WriteLine(err);
        Assert.Equal(0, process.ExitCode);
        Assert.Contains("summary:", err, StringComparison.Ordinal);
        foreach (string vm in new[] { "alpha", "beta" })
        {
            AuditKind last = AuditKind.VmStart;
            uint reason = 99;
            var result = AuditLogVerifier.VerifyFile(kit.Path($"audit/{vm}.audit"), new SecureVmm.Appliance.Audit.Ed25519AuditVerifier(kit.Builder.AuditKey.PublicKey),
                (in AuditRecord r) => { last = r.Kind; reason = r.Reason; });
            Assert.True(result.Ok && result.Closed && result.SignaturesChecked, result.Problem?.Message ?? $"{vm}: not closed or not signed");
            Assert.Equal(AuditKind.VmStop, last);
            Assert.Equal((uint)VmStopReason.Operator, reason);
        }
        Assert.False(File.Exists(kit.Path("control.sock")));
    }
}
