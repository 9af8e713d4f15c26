using System.Diagnostics;
using SecureVmm.Appliance.Runtime;
using Xunit;
using Xunit.Abstractions;

namespace SecureVmm.Tests.Appliance;

/// <summary>
/// Fair sharing: VMs spinning in tight loops with interrupts off (more of them than the host has
/// cores) cannot starve an interactive VM's console, the spinning VMs share the CPU between them, and
/// a halted VM does not spin. The bounds are starvation bounds (seconds), not speed targets; the
/// measured latencies are printed.
/// </summary>
public class FairSharingTests(ITestOutputHelper output)
{
    [Fact]
    public void SpinningVmsDoNotStarveAnInteractiveConsole()
    {
        using var kit = new ApplianceTestKit();
        string shell = kit.GuestImage("interactive");
        string hog = kit.GuestImage("cpu-hog");
        int hogs = Environment.ProcessorCount + 1;
        var networks = Enumerable.Range(0, hogs + 1).Select(i => ApplianceTestKit.Network($"net-{i}", i + 1)).ToList();
        var vms = new List<SecureVmm.Policy.Policy.VmDocument> { kit.Vm("shell", shell, "net-0") };
        vms.AddRange(Enumerable.Range(1, hogs).Select(i => kit.Vm($"hog-{i}", hog, $"net-{i}", devices: ["serial"])));
        using var runtime = ApplianceRuntime.Prepare(kit.Load(kit.Policy(networks, vms)), null, TextWriter.Null);
        runtime.StartAll();
        var shellVm = runtime.Vms[0];
        Assert.True(ApplianceTestKit.WaitFor(() => shellVm.Serial.CurrentLine.Contains("unclass>", StringComparison.Ordinal), TimeSpan.FromSeconds(30)),
            "the interactive VM never showed its prompt next to the spinning VMs");

        // Idle: at its prompt the shell is halted; it must not execute while waiting for keys.
        long idleStart = shellVm.Machine.InstructionCount;
        Thread.Sleep(1000);
        long idleInstructions = shellVm.Machine.InstructionCount - idleStart;
        output.WriteLine($"halted shell ran {idleInstructions} instructions in 1 s of waiting");
        Assert.True(idleInstructions < 10_000, $"a halted VM executed {idleInstructions} instructions in a second");

        var latencies = new List<double>();
        for (int i = 0; i < 10; i++)
        {
            string line = $"line{i}";
            var clock = Stopwatch.StartNew();
            shellVm.SendInput(System.Text.Encoding.ASCII.GetBytes(line + "\r"));
            bool answered = ApplianceTestKit.WaitFor(() => shellVm.Serial.Tail(4).Any(l => l == "you typed: " + line), TimeSpan.FromSeconds(10));
            Assert.True(answered, $"no answer to '{line}' within 10 s while {hogs} VMs spin on {Environment.ProcessorCount} cores");
            latencies.Add(clock.Elapsed.TotalMilliseconds);
        }
        latencies.Sort();
        output.WriteLine($"console round trip next to {hogs} spinning VMs on {Environment.ProcessorCount} cores: median {latencies[latencies.Count / 2]:F0} ms, max {latencies[^1]:F0} ms");

        var counts = runtime.Vms.Skip(1).Select(v => v.Machine.InstructionCount).ToList();
        runtime.StopAll();
        output.WriteLine("spinning VMs' instructions: " + string.Join(", ", counts.Select(c => c.ToString("N0", System.Globalization.CultureInfo.InvariantCulture))));
        // Every spinning VM got a share: none was starved by the others.
        Assert.All(counts, c => Assert.True(c > counts.Max() / 4, $"a spinning VM ran {c:N0} instructions against the busiest one's {counts.Max():N0}"));
        Assert.Equal(0, runtime.FinishAll());
    }
}
