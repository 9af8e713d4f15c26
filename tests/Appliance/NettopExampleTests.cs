using System.Diagnostics;
using SecureVmm.Appliance.Guests;
using SecureVmm.Appliance.Runtime;
using TapBackend = SecureVmm.NetFilter.Backends.TapBackend;
using SecureVmm.Policy.Keys;
using SecureVmm.Policy.Policy;
using SecureVmm.Tcb.Audit;
using SecureVmm.Tests.Machine;
using SecureVmm.Tests.Policy;
using SecureVmm.Tests.Support;
using Xunit;
using Xunit.Abstractions;

namespace SecureVmm.Tests.Appliance;

/// <summary>
/// The README's walk-through, for real: guests-policy/examples/nettop-setup.sh prepares the
/// two-desktop example (namespaces and bridges, keys, signed Debian images, the example policy
/// with this host's keys, signed), then the runtime `securevmm run` uses starts both Linux VMs on
/// their TAP networks. The SECRET desktop pings its LAN's host; the UNCLASSIFIED desktop cannot
/// reach the SECRET LAN; both audit logs verify. Runs in CI (root); elsewhere with
/// SECUREVMM_TWO_GUESTS=1 as root (several minutes).
/// </summary>
[Collection("Debian guest")]
public class NettopExampleTests(ITestOutputHelper output)
{
    [Fact]
    public void TheExamplePolicyRunsTwoDesktopsEachOnItsOwnLan()
    {
        if (!HostTools.InCi && Environment.GetEnvironmentVariable("SECUREVMM_TWO_GUESTS") != "1")
        {
            output.WriteLine("NOT RUN: outside CI, set SECUREVMM_TWO_GUESTS=1 (as root) to run the two-desktop example (several minutes)");
            return;
        }
        if (DebianLinuxBootTests.Guest(output) is null)
        {
            return;
        }
        if (TapBackend.UnavailableReason() is { } tapReason)
        {
            output.WriteLine($"NOT RUN: {tapReason}");
            Assert.False(HostTools.InCi && Environment.UserName == "root", $"as root in CI this must run: {tapReason}");
            return;
        }
        // The example's fixed names: clean up what an interrupted earlier run may have left.
        foreach (string ns in new[] { "secret", "public" })
        {
            RunProcess("ip", ["netns", "del", ns], allowFailure: true);
        }
        string work = Directory.CreateTempSubdirectory("svmm-nettop").FullName;
        try
        {
            string script = Path.Combine(PolicyFixture.RepoRoot, "guests-policy", "examples", "nettop-setup.sh");
            string cli = "dotnet " + Path.Combine(AppContext.BaseDirectory, "securevmm.dll");
            RunProcess("bash", [script, Path.Combine(work, "nettop")], env: new()
            {
                ["SECUREVMM"] = cli,
                ["SECUREVMM_STATE"] = Path.Combine(work, "state"),
                ["SECUREVMM_GUEST_CACHE"] = GuestCommand.DefaultDebianCache,
            });
            string policyPath = Path.Combine(work, "nettop", "policy.json");
            var policy = PolicyLoader.LoadVerified(policyPath, KeyFiles.ReadPublic(Path.Combine(work, "nettop", "admin.pub")));
            var progress = new StringWriter();
            using var runtime = ApplianceRuntime.Prepare(policy, null, progress);
            output.WriteLine(progress.ToString());
            runtime.StartAll();
            var secret = runtime.Find("secret-desktop")!;
            var open = runtime.Find("public-desktop")!;
            foreach (var vm in new[] { secret, open })
            {
                Assert.True(ApplianceTestKit.WaitFor(() => vm.Serial.CurrentLine.EndsWith(DebianLinuxBootTests.Prompt, StringComparison.Ordinal) || vm.HasEnded,
                    TimeSpan.FromMinutes(10)), $"{vm.VmName}: no shell prompt: {string.Join("\n", vm.Serial.Tail(20))}");
                Assert.False(vm.HasEnded, $"{vm.VmName} ended: {vm.Status.Detail}");
            }
            string insmod = string.Join("; ", GuestCommand.VirtioNetModules.Select(m => $"insmod /lib/modules/$(uname -r)/{m}"));
            Run(secret, insmod + "; ip addr add 10.20.0.10/24 dev eth0; ip link set eth0 up");
            Run(open, insmod + "; ip addr add 192.168.50.10/24 dev eth0; ip link set eth0 up");
            string ping = Run(secret, "ping -c 3 -W 2 10.20.0.1");
            Assert.Contains("3 packets received", ping, StringComparison.Ordinal);
            // The UNCLASSIFIED desktop has no way onto the SECRET LAN: not by route, not by a forged
            // source on its own LAN (anti-spoofing drops it, and the drop is audited).
            string crossing = Run(open, "ping -c 1 -W 2 10.20.0.1");
            Assert.DoesNotContain("1 packets received", crossing, StringComparison.Ordinal);
            Run(open, "ip addr add 10.20.0.77/24 dev eth0; ping -c 2 -W 1 -I 10.20.0.77 10.20.0.1");
            Assert.True(ApplianceTestKit.WaitFor(() => open.ReadStatus().DroppedOut > 0, TimeSpan.FromSeconds(10)));

            runtime.StopAll();
            Assert.Equal(0, runtime.FinishAll());
            foreach (var vm in new[] { secret, open })
            {
                var kinds = new Dictionary<AuditKind, long>();
                var result = AuditLogVerifier.VerifyFile(vm.AuditPath, null, (in AuditRecord r) => kinds[r.Kind] = kinds.GetValueOrDefault(r.Kind) + 1);
                Assert.True(result.Ok && result.Closed, result.Problem?.Message);
                output.WriteLine($"{vm.VmName}: {result.Records:N0} records, " + string.Join(", ", kinds.Select(k => $"{k.Key} {k.Value}")));
                Assert.Equal(1, kinds.GetValueOrDefault(AuditKind.ImageVerified));
                Assert.Equal(1, kinds.GetValueOrDefault(AuditKind.PolicyLoaded));
            }
            Assert.True(AuditLogVerifier.VerifyFile(open.AuditPath, null, (in AuditRecord r) => { }).Ok);
        }
        finally
        {
            foreach (string ns in new[] { "secret", "public" })
            {
                RunProcess("ip", ["netns", "del", ns], allowFailure: true);
            }
            Directory.Delete(work, true);
        }
    }

    private int _marker;

    /// <summary>Types a command into a VM's serial shell and returns its output (up to a marker the shell echoes after it).</summary>
    private string Run(ApplianceVm vm, string command)
    {
        string marker = $"DONE{++_marker}";
        vm.SendInput(System.Text.Encoding.ASCII.GetBytes($"{command}; echo {marker}\r"));
        Assert.True(ApplianceTestKit.WaitFor(() => vm.Serial.Tail(60).Contains(marker), TimeSpan.FromMinutes(3)),
            $"{vm.VmName}: '{command}' did not finish: {string.Join("\n", vm.Serial.Tail(20))}");
        var lines = vm.Serial.Tail(60).ToList();
        int end = lines.IndexOf(marker);
        int start = lines.FindLastIndex(end, l => l.Contains("echo " + marker, StringComparison.Ordinal));
        string text = string.Join("\n", lines.Skip(start + 1).Take(end - start - 1));
        output.WriteLine($"[{vm.VmName}] {command}\n{text}");
        return text;
    }

    private void RunProcess(string program, string[] arguments, Dictionary<string, string>? env = null, bool allowFailure = false)
    {
        var info = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in arguments)
        {
            info.ArgumentList.Add(a);
        }
        foreach (var (k, v) in env ?? [])
        {
            info.Environment[k] = v;
        }
        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        string stderr = process.StandardError.ReadToEnd();
        process.WaitForExit();
        if (!allowFailure)
        {
            output.WriteLine(stdout.Result + stderr);
            Assert.True(process.ExitCode == 0, $"{program} {string.Join(' ', arguments)} failed ({process.ExitCode}): {stderr}");
        }
    }
}
