using SecureVmm.Appliance.Audit;
using SecureVmm.Appliance.Run;
using SecureVmm.Appliance.Runtime;
using SecureVmm.Policy.Images;
using SecureVmm.Tcb.Audit;
using SecureVmm.Tcb.Exits;
using Xunit;
using Xunit.Abstractions;

namespace SecureVmm.Tests.Appliance;

/// <summary>`securevmm run`: verification before anything starts, the appliance's decisions in each VM's audit log, status and stop.</summary>
public class ApplianceRunTests(ITestOutputHelper output)
{
    [Fact]
    public void EachVmGetsItsOwnLogThatRecordsPolicyImageStartAndStop()
    {
        using var kit = new ApplianceTestKit();
        string shell = kit.GuestImage("interactive");
        string hog = kit.GuestImage("cpu-hog");
        string policyPath = kit.Policy(
            [ApplianceTestKit.Network("net-a", 1, level: "SECRET", colour: "red"), ApplianceTestKit.Network("net-b", 2)],
            [kit.Vm("alpha", shell, "net-a", "SECRET", "red"), kit.Vm("beta", hog, "net-b", devices: ["serial"], recordData: true)]);
        var policy = kit.Load(policyPath);
        var progress = new StringWriter();
        using (var runtime = ApplianceRuntime.Prepare(policy, new Ed25519AuditSigner(kit.Builder.AuditKey), progress))
        {
            Assert.Contains("[1/2] verifying image for VM alpha", progress.ToString(), StringComparison.Ordinal);
            runtime.StartAll();
            Assert.True(ApplianceTestKit.WaitFor(() => runtime.Vms[0].Serial.CurrentLine.Contains("unclass>", StringComparison.Ordinal), TimeSpan.FromSeconds(20)),
                "alpha never showed its prompt: " + string.Join("|", runtime.Vms[0].Serial.Tail(5)));
            runtime.Vms[0].SendInput("hi\r"u8);
            Assert.True(ApplianceTestKit.WaitFor(() => runtime.Vms[0].Serial.Tail(5).Any(l => l.Contains("you typed: hi", StringComparison.Ordinal)), TimeSpan.FromSeconds(20)));
            runtime.StopAll();
            Assert.Equal(0, runtime.FinishAll());
        }

        var verifier = new Ed25519AuditVerifier(kit.Builder.AuditKey.PublicKey);
        foreach (var (vm, image) in new[] { ("alpha", shell), ("beta", hog) })
        {
            var records = new List<AuditRecord>();
            var result = AuditLogVerifier.VerifyFile(kit.Path($"audit/{vm}.audit"), verifier, (in AuditRecord r) => records.Add(r));
            Assert.True(result.Ok, result.Problem?.Message);
            Assert.True(result.Closed && result.SignaturesChecked);
            Assert.Equal(vm, Assert.Single(result.Header!.VmNames));
            var manifest = ImageLoader.LoadVerified(image, [kit.Builder.ReleaseKey.PublicKey], vm, null);

            Assert.Equal(AuditKind.PolicyLoaded, records[0].Kind);
            Assert.Equal(policy.Sha256, Hex(records[0]));
            Assert.Equal(AuditKind.ImageVerified, records[1].Kind);
            Assert.Equal(manifest.ManifestSha256, Hex(records[1]));
            Assert.True(AuditRecord.TryParseKeyId(kit.Builder.ReleaseKey.Id, out ulong keyId));
            Assert.Equal(keyId, records[1].KeyId);
            Assert.Equal(AuditKind.VmStart, records[2].Kind);
            Assert.Equal(AuditKind.VmStop, records[^1].Kind);
            Assert.Equal((uint)VmStopReason.Operator, records[^1].Reason);
            // recordData: alpha (false) keeps ports but not values; beta (true) keeps the bytes it printed.
            var com1Writes = records.Where(r => r.Kind == AuditKind.IoOut && r.Port == 0x3F8).ToList();
            Assert.NotEmpty(com1Writes);
            if (vm == "alpha")
            {
                Assert.All(com1Writes, r => Assert.Equal(0UL, r.Value));
            }
            else
            {
                Assert.Contains(com1Writes, r => r.Value == 'c'); // "cpu-hog: spinning"
            }
            output.WriteLine($"{vm}: {records.Count} records verified");
        }
        // The rollback state now knows both images.
        Assert.Equal(1UL, RollbackState.Load(kit.Path("state/rollback.json")).HighestBooted("alpha"));
    }

    [Fact]
    public void OneBadImageStartsNothingAndNamesEveryProblem()
    {
        using var kit = new ApplianceTestKit();
        var (policyPath, shell, hog) = ShellAndHog(kit);
        var policy = kit.Load(policyPath);
        // Flip one byte of beta's kernel payload (the last byte of the file).
        byte[] bytes = File.ReadAllBytes(hog);
        bytes[^1] ^= 0x01;
        File.WriteAllBytes(hog, bytes);
        // And leave an old log where alpha's would go.
        Directory.CreateDirectory(kit.Path("audit"));
        File.WriteAllText(kit.Path("audit/alpha.audit"), "old");

        var e = Assert.Throws<ApplianceException>(() => ApplianceRuntime.Prepare(policy, null, TextWriter.Null));
        Assert.Contains("not starting anything: 2 problems", e.Message, StringComparison.Ordinal);
        Assert.Contains("VM beta", e.Message, StringComparison.Ordinal);
        Assert.Contains(hog, e.Message, StringComparison.Ordinal);
        Assert.Contains("audit log " + kit.Path("audit/alpha.audit") + " already exists", e.Message, StringComparison.Ordinal);
        Assert.False(File.Exists(kit.Path("audit/beta.audit")));
        Assert.Equal("old", File.ReadAllText(kit.Path("audit/alpha.audit")));
    }

    [Fact]
    public void StatusAndStopThroughTheControlSocket()
    {
        using var kit = new ApplianceTestKit();
        var (policyPath, shell, hog) = ShellAndHog(kit);
        using var runtime = ApplianceRuntime.Prepare(kit.Load(policyPath), null, TextWriter.Null);
        string socket = kit.Path("control.sock");
        var log = new StringWriter();
        int status = -1;
        var run = new Thread(() => status = RunCommand.RunPrepared(runtime,
            new RunCommand.RunOptions(policyPath, null, null, null, socket, null, ConsoleMode.None), log));
        run.Start();
        Assert.True(ApplianceTestKit.WaitFor(() => File.Exists(socket) && runtime.Vms[1].Machine.InstructionCount > 0, TimeSpan.FromSeconds(20)));

        Assert.True(ControlClient.TrySend(socket, "status", out string reply), reply);
        output.WriteLine(reply);
        Assert.StartsWith("ok\n", reply, StringComparison.Ordinal);
        Assert.Matches(@"alpha\s+UNCLASSIFIED/green\s+running", reply);
        Assert.Matches(@"beta\s+UNCLASSIFIED/green\s+running\s+[\d,]+", reply);

        Assert.True(ControlClient.TrySend(socket, "stop beta", out reply));
        Assert.Contains("stopped beta (exit status 0)", reply, StringComparison.Ordinal);
        Assert.Equal(PaneStateStopped, runtime.Vms[1].Status.State);
        Assert.True(runtime.Vms[0].Machine.IsRunning);
        Assert.True(AuditLogVerifier.VerifyFile(kit.Path("audit/beta.audit"), null).Closed); // closed as soon as beta stopped

        Assert.True(ControlClient.TrySend(socket, "stop nobody", out reply));
        Assert.StartsWith("error: no VM named 'nobody'", reply, StringComparison.Ordinal);
        Assert.True(ControlClient.TrySend(socket, "format c:", out reply));
        Assert.StartsWith("error: unknown request", reply, StringComparison.Ordinal);

        Assert.True(ControlClient.TrySend(socket, "stop", out reply));
        Assert.True(run.Join(TimeSpan.FromSeconds(30)));
        Assert.Equal(0, status);
        Assert.False(File.Exists(socket));
        Assert.Contains("summary:", log.ToString(), StringComparison.Ordinal);
        Assert.True(AuditLogVerifier.VerifyFile(kit.Path("audit/alpha.audit"), null).Ok);
    }

    /// <summary>A signed policy: VM alpha runs the interactive guest, beta the CPU hog, each on its own network.</summary>
    private static (string Policy, string ShellImage, string HogImage) ShellAndHog(ApplianceTestKit kit)
    {
        string shell = kit.GuestImage("interactive");
        string hog = kit.GuestImage("cpu-hog");
        string policy = kit.Policy(
            [ApplianceTestKit.Network("net-a", 1), ApplianceTestKit.Network("net-b", 2)],
            [kit.Vm("alpha", shell, "net-a"), kit.Vm("beta", hog, "net-b")]);
        return (policy, shell, hog);
    }

    private static string Hex(AuditRecord record)
    {
        Sha256Digest digest = record.Digest;
        return Convert.ToHexStringLower((ReadOnlySpan<byte>)digest);
    }

    private const SecureVmm.Appliance.Terminal.PaneState PaneStateStopped = SecureVmm.Appliance.Terminal.PaneState.Stopped;
}
