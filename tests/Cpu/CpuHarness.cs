using System.Text;
using Iced.Intel;
using SecureVmm.Tcb.Cpu;
using SecureVmm.Tcb.Exits;
using SecureVmm.Tcb.Memory;

namespace SecureVmm.Tests.Cpu;

/// <summary>
/// A tiny machine for CPU tests: guest RAM, a CPU, and an exit handler that records every exit,
/// collects bytes written to the serial port 0x3F8 and stops on a write to port 0xF4
/// (isa-debug-exit, the same convention the differential tests use with QEMU).
/// </summary>
public sealed class CpuHarness : IExitHandler, IDisposable
{
    public const ushort SerialPort = 0x3F8;
    public const ushort DebugExitPort = 0xF4;

    public GuestRam Ram { get; }
    public PhysicalMemoryMap Map { get; }
    public SecureVmm.Tcb.Cpu.Cpu Cpu { get; }
    public List<VmExit> Exits { get; } = [];
    public StringBuilder Serial { get; } = new();
    public uint? DebugExitValue { get; private set; }
    /// <summary>Values returned for IN from a port (default all-ones).</summary>
    public Dictionary<ushort, uint> PortValues { get; } = [];
    public bool RecordExits { get; set; } = true;

    public CpuHarness(int ramMiB = 4)
    {
        Ram = new GuestRam((long)ramMiB * 1024 * 1024);
        Map = new PhysicalMemoryMap(Ram);
        Cpu = new SecureVmm.Tcb.Cpu.Cpu(Map, this);
    }

    public ExitAction OnExit(ref VmExit exit)
    {
        if (RecordExits)
        {
            Exits.Add(exit);
        }
        switch (exit.Kind)
        {
            case ExitKind.IoOut when exit.Port == SerialPort:
                Serial.Append((char)(byte)exit.Value);
                break;
            case ExitKind.IoOut when exit.Port == DebugExitPort:
                DebugExitValue = (uint)exit.Value;
                return ExitAction.Stop;
            case ExitKind.IoIn:
                exit.Value = PortValues.TryGetValue(exit.Port, out uint v) ? v : 0xFFFF_FFFF;
                break;
        }
        return ExitAction.Continue;
    }

    /// <summary>Assembles <paramref name="build"/> at <paramref name="address"/> and loads it into RAM.</summary>
    public static byte[] Assemble(int bitness, ulong address, Action<Assembler> build)
    {
        var asm = new Assembler(bitness);
        build(asm);
        var stream = new MemoryStream();
        asm.Assemble(new StreamCodeWriter(stream), address);
        return stream.ToArray();
    }

    public void Load(uint address, byte[] bytes) => Map.WriteRam(address, bytes);

    /// <summary>Loads 32-bit code at <paramref name="address"/>, enters flat protected mode there with ESP at 0x80000.</summary>
    public void Load32(uint address, Action<Assembler> build)
    {
        Load(address, Assemble(32, address, build));
        Cpu.EnterFlatProtectedMode(address);
        Cpu.Esp = 0x80000;
    }

    /// <summary>Loads 16-bit code at 0000:<paramref name="address"/> and starts in real mode there.</summary>
    public void Load16(ushort address, Action<Assembler> build)
    {
        Load(address, Assemble(16, address, build));
        Cpu.SetRealModeEntry(0, address);
        Cpu.Esp = 0x7000;
    }

    public RunStatus Run(long budget = 1_000_000) => Cpu.Run(budget);

    /// <summary>Debugging aid: runs one instruction at a time and returns a disassembly trace with registers.</summary>
    public string Trace(int steps)
    {
        var sb = new StringBuilder();
        var buffer = new byte[16];
        for (int i = 0; i < steps; i++)
        {
            var cs = Cpu.GetSegment(SegReg.Cs);
            uint lin = cs.Base + Cpu.Eip;
            Cpu.TryReadLinear(lin, buffer);
            var decoder = Iced.Intel.Decoder.Create(cs.Big ? 32 : 16, buffer);
            decoder.IP = Cpu.Eip;
            var insn = decoder.Decode();
            sb.AppendLine($"{cs.Selector:X4}:{Cpu.Eip:X8} {insn,-32} eax={Cpu.Eax:X8} ecx={Cpu.Ecx:X8} esp={Cpu.Esp:X8} cpl={Cpu.Cpl} fl={Cpu.Eflags:X}");
            var status = Cpu.Run(1);
            if (status != RunStatus.BudgetExhausted)
            {
                sb.AppendLine(status.ToString());
                break;
            }
        }
        return sb.ToString();
    }

    public uint ReadU32(uint address) => BitConverter.ToUInt32(Ram.Slice(address, 4));

    public void WriteU32(uint address, uint value) => Map.WriteRam(address, BitConverter.GetBytes(value));

    public void Dispose() => Ram.Dispose();
}

/// <summary>Helpers that emit common guest idioms with Iced's assembler.</summary>
public static class GuestCode
{
    /// <summary>Writes <paramref name="value"/> to the debug-exit port (ends the test program).</summary>
    public static void Exit(this Assembler a, byte value = 0)
    {
        a.mov(AssemblerRegisters.al, value);
        a.@out((byte)CpuHarness.DebugExitPort, AssemblerRegisters.al);
    }
}
