using SecureVmm.Policy.Guests;
using SecureVmm.Tcb.Boot;
using SecureVmm.Tcb.Devices;
using SecureVmm.Tcb.Machine;
using Xunit;
using Xunit.Abstractions;

namespace SecureVmm.Tests.Machine;

public class ProjectGuestsOnMachineTests(ITestOutputHelper output)
{
    private static VirtualMachine Boot(GuestImage image, BufferSerialOutput serial, ClockMode clock = ClockMode.Deterministic, bool debugExit = true)
    {
        var vm = new VirtualMachine(new MachineConfig
        {
            Name = image.Name,
            MemoryBytes = 16L * 1024 * 1024,
            Clock = clock,
            Serial = serial,
            DebugExit = debugExit,
        });
        vm.Boot(MultibootLoader.Load(vm.Ram, image.Bytes, ""));
        return vm;
    }

    [Fact]
    public void HelloPrintsAndDebugExits()
    {
        var serial = new BufferSerialOutput();
        using var vm = Boot(ProjectGuests.Hello(), serial);
        MachineOutcome outcome = vm.RunToCompletion();
        output.WriteLine(serial.Text);
        output.WriteLine(outcome.ToString());
        Assert.Equal(StopReason.DebugExit, outcome.Reason);
        Assert.Equal(0u, outcome.Value);
        Assert.Contains("Hello from the SecureVmm hello guest", serial.Text, StringComparison.Ordinal);
        Assert.Contains("cpu vendor: ", serial.Text, StringComparison.Ordinal);
    }

    [Fact]
    public void KioskTicksInDeterministicTime()
    {
        var serial = new BufferSerialOutput();
        using var vm = Boot(ProjectGuests.Kiosk("SECRET KIOSK", 0x4F), serial);
        vm.Start();
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (!serial.Text.Contains("kiosk: uptime 3 s", StringComparison.Ordinal) && DateTime.UtcNow < deadline && vm.IsRunning)
        {
            Thread.Sleep(10);
        }
        vm.RequestStop();
        vm.WaitForExit(TimeSpan.FromSeconds(10));
        output.WriteLine(serial.Text);
        output.WriteLine(vm.Outcome.ToString());
        Assert.Contains("kiosk: uptime 3 s", serial.Text, StringComparison.Ordinal);
        VgaScreen screen = vm.Vga.Snapshot();
        Assert.Contains("SECRET KIOSK", screen.Text, StringComparison.Ordinal);
        Assert.Equal(0x4F, screen.AttributeAt(2, 40));
    }

    [Fact]
    public void InteractiveEchoesTypedLines()
    {
        var serial = new BufferSerialOutput();
        using var vm = Boot(ProjectGuests.Interactive("unclass> "), serial);
        vm.Start();
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (!serial.Text.Contains("unclass> ", StringComparison.Ordinal) && DateTime.UtcNow < deadline)
        {
            Thread.Sleep(5);
        }
        vm.Serial.EnqueueInput("secret plans\r"u8);
        while (!serial.Text.Contains("you typed: secret plans", StringComparison.Ordinal) && DateTime.UtcNow < deadline)
        {
            Thread.Sleep(5);
        }
        vm.RequestStop();
        vm.WaitForExit(TimeSpan.FromSeconds(10));
        output.WriteLine(serial.Text);
        Assert.Contains("you typed: secret plans", serial.Text, StringComparison.Ordinal);
        Assert.Equal(StopReason.HostStop, vm.Outcome.Reason);
    }

    [Fact]
    public void PausesResumesAndStopsCleanlyAtAnyPoint()
    {
        var serial = new BufferSerialOutput();
        var vm = Boot(ProjectGuests.CpuHog(), serial);
        vm.Start();
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (vm.InstructionCount < 1_000_000 && DateTime.UtcNow < deadline)
        {
            Thread.Sleep(5);
        }
        vm.Pause();
        Assert.True(vm.IsPaused);
        long paused = vm.InstructionCount;
        Thread.Sleep(200);
        Assert.Equal(paused, vm.InstructionCount); // nothing runs while paused
        vm.Resume();
        while (vm.InstructionCount == paused && DateTime.UtcNow < deadline)
        {
            Thread.Sleep(5);
        }
        Assert.True(vm.InstructionCount > paused, "the VM runs again after Resume");
        vm.Dispose(); // stops the running VM, waits for its thread, scrubs its RAM
        Assert.False(vm.IsRunning);
        Assert.Equal(StopReason.HostStop, vm.Outcome.Reason);
        Assert.Equal(0, vm.Ram.Size);
    }

    [Fact]
    public void TwoVmsInOneProcessShareNothing()
    {
        var serialA = new BufferSerialOutput();
        var serialB = new BufferSerialOutput();
        using var a = Boot(ProjectGuests.Hello(), serialA);
        using var b = Boot(ProjectGuests.Kiosk("B", 0x1F), serialB);
        b.Start();
        Assert.Equal(StopReason.DebugExit, a.RunToCompletion().Reason);
        b.RequestStop();
        b.WaitForExit(TimeSpan.FromSeconds(10));
        Assert.Contains("Hello from the SecureVmm hello guest", serialA.Text, StringComparison.Ordinal);
        Assert.DoesNotContain("kiosk", serialA.Text, StringComparison.Ordinal);
        Assert.DoesNotContain("Hello", serialB.Text, StringComparison.Ordinal);
        Assert.DoesNotContain("B", a.Vga.Snapshot().Text, StringComparison.Ordinal);
    }
}
