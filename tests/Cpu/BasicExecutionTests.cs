using SecureVmm.Tcb.Cpu;
using SecureVmm.Tcb.Exits;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace SecureVmm.Tests.Cpu;

public class BasicExecutionTests
{
    [Fact]
    public void AddsAndStopsOnDebugExit()
    {
        using var h = new CpuHarness();
        h.Load32(0x1000, a =>
        {
            a.mov(edx, 5);
            a.mov(ebx, 7);
            a.add(edx, ebx);
            a.Exit(3);
        });
        Assert.Equal(RunStatus.Stopped, h.Run());
        Assert.Equal(12u, h.Cpu.Edx);
        Assert.Equal(3u, h.DebugExitValue);
        var exit = h.Exits[^1];
        Assert.Equal(ExitKind.IoOut, exit.Kind);
        Assert.Equal(4UL, exit.InstructionCount);
    }

    [Fact]
    public void LoopsCountAndBudgetSplitsRuns()
    {
        using var h = new CpuHarness();
        h.Load32(0x1000, a =>
        {
            var top = a.CreateLabel();
            a.mov(ecx, 1000);
            a.xor(edx, edx);
            a.Label(ref top);
            a.add(edx, ecx);
            a.dec(ecx);
            a.jnz(top);
            a.Exit();
        });
        Assert.Equal(RunStatus.BudgetExhausted, h.Run(100));
        Assert.Equal(100, h.Cpu.InstructionCount);
        Assert.Equal(RunStatus.Stopped, h.Run(1_000_000));
        Assert.Equal(500500u, h.Cpu.Edx);
        Assert.Equal(2 + 3000 + 2, h.Cpu.InstructionCount);
    }

    [Fact]
    public void SerialOutputIsCollected()
    {
        using var h = new CpuHarness();
        h.Load32(0x1000, a =>
        {
            a.mov(dx, CpuHarness.SerialPort);
            foreach (char ch in "hi")
            {
                a.mov(al, (byte)ch);
                a.@out(dx, al);
            }
            a.Exit();
        });
        Assert.Equal(RunStatus.Stopped, h.Run());
        Assert.Equal("hi", h.Serial.ToString());
    }
}
