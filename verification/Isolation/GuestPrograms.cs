using FsCheck;
using FsCheck.Fluent;
using Iced.Intel;
using SecureVmm.Policy.Guests;
using SecureVmm.Tcb.Boot;
using SecureVmm.Tcb.Exits;
using SecureVmm.Tcb.Machine;
using static Iced.Intel.AssemblerRegisters;

namespace SecureVmm.Verification.Isolation;

/// <summary>What one generated guest operation does.</summary>
public enum GuestOpKind : byte
{
    /// <summary>ALU on registers: EAX..EDX combined with an immediate (no exit).</summary>
    Alu,
    /// <summary>32-bit store to an address inside the VM's RAM scratch area (no exit).</summary>
    StoreRam,
    /// <summary>32-bit load from the RAM scratch area (no exit).</summary>
    LoadRam,
    /// <summary>32-bit store far outside RAM: one MmioWrite exit.</summary>
    StoreOutside,
    /// <summary>32-bit load far outside RAM: one MmioRead exit.</summary>
    LoadOutside,
    /// <summary>OUT of AL/AX/EAX to a port: one IoOut exit.</summary>
    Out,
    /// <summary>IN to AL/AX/EAX from a port: one IoIn exit.</summary>
    In,
    /// <summary>CPUID with a given leaf: one Cpuid exit.</summary>
    Cpuid,
    /// <summary>RDMSR of an MSR: one Rdmsr exit (then #GP, skipped by the program's handler, when unknown).</summary>
    Rdmsr,
    /// <summary>WRMSR of an MSR: one Wrmsr exit (then #GP, skipped, when refused).</summary>
    Wrmsr,
    /// <summary>A privileged register read at CPL 0 (MOV from CR0/CR2/CR3/CR4): no exit.</summary>
    ReadControl,
}

/// <summary>One generated operation. Address is a linear address (= physical with paging off; translated by the page-table
/// model in <see cref="ModePrograms"/>) or an MSR number.</summary>
public readonly record struct GuestOp(GuestOpKind Kind, uint Address, ushort Port, byte Size, uint Value)
{
    public override string ToString() => Kind switch
    {
        GuestOpKind.Out => $"out 0x{Port:X}/{Size}=0x{Value:X}",
        GuestOpKind.In => $"in 0x{Port:X}/{Size}",
        GuestOpKind.Cpuid => $"cpuid 0x{Value:X}",
        GuestOpKind.Rdmsr or GuestOpKind.Wrmsr => $"{Kind} msr 0x{Address:X}",
        GuestOpKind.Alu => $"alu {Port}/{Value:X}",
        _ => $"{Kind} [0x{Address:X}]=0x{Value:X}",
    };
}

/// <summary>One exit as the properties compare it (the fields that identify what the guest did).</summary>
public readonly record struct ExitTraceEntry(ExitKind Kind, ushort Port, byte Size, ulong Address, ulong Value, ulong InstructionCount, uint Eip)
{
    public static ExitTraceEntry From(in VmExit e) => new(e.Kind, e.Port, e.Size, e.Address, e.Value, e.InstructionCount, e.Eip);
}

/// <summary>A recorder that keeps every exit (a tee before or instead of the audit log).</summary>
public sealed class TraceRecorder(IExitRecorder? inner = null) : IExitRecorder
{
    public List<ExitTraceEntry> Exits { get; } = [];

    public bool TryRecord(in VmExit exit, long virtualTimeNs)
    {
        Exits.Add(ExitTraceEntry.From(in exit));
        return inner?.TryRecord(in exit, virtualTimeNs) ?? true;
    }

    public string? FailureReason => inner?.FailureReason;
}

/// <summary>
/// Generators of straight-line guest programs and of hostile code, and the bounded runner.
/// Straight-line programs always end (no backward jumps): the last operation is CLI; HLT, the
/// guest's power-off (StopReason.PowerOff). The exits each operation must cause are known, so a
/// property can compare the machine's trace with the program's own expectation.
/// </summary>
public static class GuestPrograms
{
    /// <summary>RAM of every generated VM: small, so that many cases stay cheap.</summary>
    public const long RamBytes = 4L << 20;
    /// <summary>Scratch area for in-RAM stores (above the image, its bss and stack).</summary>
    public const uint ScratchBase = 0x0030_0000;
    public const uint ScratchSize = 0x0010_0000;
    /// <summary>Addresses at or above this lie outside every generated VM's RAM and hit no device.</summary>
    public const uint OutsideBase = 0x0100_0000;

    /// <summary>
    /// Ports a random OUT must not touch: 0xF4 (debug exit, reserved for the final exit), 0x64
    /// and 0xCF9 (reset requests), 0x92 (fast A20 / fast reset bit 0). Everything else is fair game.
    /// </summary>
    internal static readonly HashSet<ushort> ForbiddenOutPorts = [0xF4, 0x64, 0xCF9, 0x92];

    /// <summary>Ports of the PC's devices, so that generated I/O often reaches a real device model.</summary>
    internal static readonly ushort[] DevicePorts =
    [
        0x20, 0x21, 0xA0, 0xA1, 0x40, 0x41, 0x42, 0x43, 0x60, 0x61, 0x70, 0x71, 0x80,
        0x3F8, 0x3F9, 0x3FA, 0x3FB, 0x3FC, 0x3FD, 0x3FE, 0x3FF, 0xCF8, 0xCFC, 0xCFD, 0x3D4, 0x3D5, 0x3DA,
    ];

    /// <summary>MSRs the CPU knows (TSC, APIC base, SYSENTER_*, EFER, PAT ...) mixed with random numbers.</summary>
    internal static readonly uint[] InterestingMsrs = [0x10, 0x1B, 0x174, 0x175, 0x176, 0x277, 0xC000_0080, 0x8B, 0xFE, 0x2FF];

    internal static Gen<ushort> Ports() => Gen.OneOf(
        Gen.Elements(DevicePorts),
        Gen.Choose(0, 0xFFFF).Select(p => (ushort)p));

    private static Gen<byte> IoSizes() => Gen.Elements((byte)1, (byte)2, (byte)4);

    private static Gen<uint> Words() => ArbMap.Default.GeneratorFor<uint>();

    private static Gen<uint> OutsideAddresses() =>
        Gen.Choose((int)(OutsideBase >> 2), 0x3FFF_FFFF).Select(v => (uint)v << 2);

    private static Gen<uint> ScratchAddresses() =>
        Gen.Choose(0, (int)(ScratchSize / 4) - 1).Select(v => ScratchBase + ((uint)v << 2));

    public static Gen<GuestOp> Ops() => Gen.Frequency(
    [
        (4, Gen.Choose(0, 7).Zip(Words(), (k, v) => new GuestOp(GuestOpKind.Alu, 0, (ushort)k, 4, v))),
        (2, ScratchAddresses().Zip(Words(), (a, v) => new GuestOp(GuestOpKind.StoreRam, a, 0, 4, v))),
        (2, ScratchAddresses().Select(a => new GuestOp(GuestOpKind.LoadRam, a, 0, 4, 0))),
        (2, OutsideAddresses().Zip(Words(), (a, v) => new GuestOp(GuestOpKind.StoreOutside, a, 0, 4, v))),
        (2, OutsideAddresses().Select(a => new GuestOp(GuestOpKind.LoadOutside, a, 0, 4, 0))),
        (3, Ports().Where(p => !ForbiddenOutPorts.Contains(p)).Zip(IoSizes()).Zip(Words(),
            (ps, v) => new GuestOp(GuestOpKind.Out, 0, ps.Item1, ps.Item2, v))),
        (3, Ports().Zip(IoSizes(), (p, s) => new GuestOp(GuestOpKind.In, 0, p, s, 0))),
        (1, Gen.OneOf(Gen.Choose(0, 0x20).Select(v => (uint)v), Gen.Choose(0, 8).Select(v => 0x8000_0000u + (uint)v), Words())
            .Select(leaf => new GuestOp(GuestOpKind.Cpuid, 0, 0, 0, leaf))),
        (1, Gen.OneOf(Gen.Elements(InterestingMsrs), Words()).Select(m => new GuestOp(GuestOpKind.Rdmsr, m, 0, 8, 0))),
        // WRMSR only to MSRs outside the known set: a random EFER or APIC-base value is legal
        // guest behaviour but changes the CPU mode mid-program; unknown MSRs exercise the exit and #GP path.
        (1, Words().Where(m => Array.IndexOf(InterestingMsrs, m) < 0 && m != 0xC000_0100 && m != 0xC000_0101)
            .Zip(Words(), (m, v) => new GuestOp(GuestOpKind.Wrmsr, m, 0, 8, v))),
        (1, Gen.Elements(0, 2, 3, 4).Select(cr => new GuestOp(GuestOpKind.ReadControl, 0, (ushort)cr, 4, 0))),
    ]);

    public static Gen<GuestOp[]> Programs(int maxOps = 40) =>
        Gen.Choose(1, maxOps).SelectMany(n => Gen.ArrayOf(Ops(), n));

    public const string ProgramStart = "iso_program_start";
    public const string ProgramEnd = "iso_program_end";

    /// <summary>
    /// Builds a bootable image: the runtime prologue, a #GP handler that skips the 2-byte
    /// RDMSR/WRMSR (Intel SDM vol. 2B, RDMSR/WRMSR: #GP(0) for an unknown MSR), the operations,
    /// then CLI; HLT (power-off). <paramref name="secret"/> fills the data section so that two
    /// builds of the same program can carry different secrets.
    /// </summary>
    public static GuestImage Build(string name, IReadOnlyList<GuestOp> ops, ReadOnlySpan<byte> secret = default) =>
        Build(name, ops, secret, out _, out _);

    /// <summary>As <see cref="Build(string, IReadOnlyList{GuestOp}, ReadOnlySpan{byte})"/>, also giving the
    /// guest addresses of the first generated instruction and of the final HLT's successor.</summary>
    public static GuestImage Build(string name, IReadOnlyList<GuestOp> ops, ReadOnlySpan<byte> secret, out uint programStart, out uint programEnd)
    {
        byte[] secretCopy = secret.ToArray();
        var bounds = new uint[2];
        GuestImage image = GuestBuilder.Build(name, g =>
        {
            uint idt = GuestRuntime.Prologue(g);
            Assembler a = g.A;
            GuestRuntime.SetGate(g, idt, 13, "iso_skip_gp");
            if (secretCopy.Length > 0)
            {
                g.Data(secretCopy);
            }
            g.Mark(ProgramStart);
            foreach (GuestOp op in ops)
            {
                Emit(a, op);
            }
            a.cli();
            a.hlt();
            g.Mark(ProgramEnd);
            a.jmp(g.Named(ProgramEnd));
            bounds[0] = g.AddressOf(ProgramStart);
            bounds[1] = g.AddressOf(ProgramEnd);

            // #GP handler: drop the error code, step over the faulting 2-byte MSR instruction (SDM vol. 3, 6.13: the
            // saved EIP of a fault points at the faulting instruction).
            g.Mark("iso_skip_gp");
            a.add(esp, 4);
            a.add(__dword_ptr[esp], 2);
            a.iretd();
            GuestRuntime.EmitLibrary(g);
        });
        programStart = bounds[0];
        programEnd = bounds[1];
        return image;
    }

    private static readonly AssemblerRegister32[] AluRegs = [eax, ebx, ecx, edx];

    internal static void Emit(Assembler a, GuestOp op)
    {
        switch (op.Kind)
        {
            case GuestOpKind.Alu:
                AssemblerRegister32 r = AluRegs[op.Port & 3];
                switch (op.Port >> 2)
                {
                    case 0: a.add(r, (int)op.Value); break;
                    default: a.xor(r, (int)op.Value); a.imul(r, AluRegs[(op.Port + 1) & 3]); break;
                }
                break;
            case GuestOpKind.StoreRam:
            case GuestOpKind.StoreOutside:
                a.mov(__dword_ptr[op.Address], op.Value);
                break;
            case GuestOpKind.LoadRam:
            case GuestOpKind.LoadOutside:
                a.mov(esi, __dword_ptr[op.Address]);
                break;
            case GuestOpKind.Out:
                a.mov(edx, (uint)op.Port);
                a.mov(eax, op.Value);
                switch (op.Size)
                {
                    case 1: a.@out(dx, al); break;
                    case 2: a.@out(dx, ax); break;
                    default: a.@out(dx, eax); break;
                }
                break;
            case GuestOpKind.In:
                a.mov(edx, (uint)op.Port);
                switch (op.Size)
                {
                    case 1: a.@in(al, dx); break;
                    case 2: a.@in(ax, dx); break;
                    default: a.@in(eax, dx); break;
                }
                break;
            case GuestOpKind.Cpuid:
                a.mov(eax, op.Value);
                a.xor(ecx, ecx);
                a.cpuid();
                break;
            case GuestOpKind.Rdmsr:
                a.mov(ecx, op.Address);
                a.rdmsr();
                break;
            case GuestOpKind.Wrmsr:
                a.mov(ecx, op.Address);
                a.mov(eax, op.Value);
                a.mov(edx, ~op.Value);
                a.wrmsr();
                break;
            case GuestOpKind.ReadControl:
                switch (op.Port)
                {
                    case 0: a.mov(edi, cr0); break;
                    case 2: a.mov(edi, cr2); break;
                    case 3: a.mov(edi, cr3); break;
                    default: a.mov(edi, cr4); break;
                }
                break;
        }
    }

    /// <summary>The exits the operations must cause, in order (kind, port or address, size, written value).</summary>
    public static List<(ExitKind Kind, ushort Port, ulong Address, byte Size, ulong? Value)> ExpectedExits(IEnumerable<GuestOp> ops)
    {
        var expected = new List<(ExitKind, ushort, ulong, byte, ulong?)>();
        foreach (GuestOp op in ops)
        {
            ulong mask = op.Size == 4 ? 0xFFFF_FFFF : (1UL << (op.Size * 8)) - 1;
            switch (op.Kind)
            {
                case GuestOpKind.StoreOutside: expected.Add((ExitKind.MmioWrite, 0, op.Address, 4, op.Value)); break;
                case GuestOpKind.LoadOutside: expected.Add((ExitKind.MmioRead, 0, op.Address, 4, null)); break;
                case GuestOpKind.Out: expected.Add((ExitKind.IoOut, op.Port, 0, op.Size, op.Value & mask)); break;
                case GuestOpKind.In: expected.Add((ExitKind.IoIn, op.Port, 0, op.Size, null)); break;
                case GuestOpKind.Cpuid: expected.Add((ExitKind.Cpuid, 0, 0, 0, null)); break;
                case GuestOpKind.Rdmsr: expected.Add((ExitKind.Rdmsr, 0, op.Address, 0, null)); break;
                case GuestOpKind.Wrmsr: expected.Add((ExitKind.Wrmsr, 0, op.Address, 0, ((ulong)~op.Value << 32) | op.Value)); break;
                default: break;
            }
        }
        expected.Add((ExitKind.Hlt, 0, 0, 0, null));
        return expected;
    }

    /// <summary>Creates a deterministic-clock VM with the image loaded.</summary>
    public static VirtualMachine Create(GuestImage image, IExitRecorder? recorder, string name = "vm")
    {
        var vm = new VirtualMachine(new MachineConfig
        {
            Name = name,
            MemoryBytes = RamBytes,
            Clock = ClockMode.Deterministic,
            DebugExit = true,
            Recorder = recorder,
            SliceInstructions = 20_000,
        });
        vm.Boot(MultibootLoader.Load(vm.Ram, image.Bytes, ""));
        return vm;
    }

    /// <summary>
    /// Runs a started VM until it stops by itself, or until it has retired
    /// <paramref name="instructionBudget"/> instructions or <paramref name="wallLimit"/> passed, when the
    /// host stops it. Returns false only if the VM did not stop even after RequestStop (a hang).
    /// </summary>
    public static bool RunBounded(VirtualMachine vm, long instructionBudget, TimeSpan wallLimit)
    {
        vm.Start();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (!vm.WaitForExit(TimeSpan.FromMilliseconds(2)))
        {
            if (vm.InstructionCount >= instructionBudget || clock.Elapsed >= wallLimit)
            {
                vm.RequestStop();
                return vm.WaitForExit(TimeSpan.FromSeconds(10));
            }
        }
        return true;
    }

    /// <summary>Case counts: the CI figure, or that times SECUREVMM_SOAK (an integer factor, default 20 when set).</summary>
    public static int Cases(int ci)
    {
        string? soak = Environment.GetEnvironmentVariable("SECUREVMM_SOAK");
        if (string.IsNullOrEmpty(soak))
        {
            return ci;
        }
        return ci * (int.TryParse(soak, out int factor) && factor > 1 ? factor : 20);
    }

    /// <summary>
    /// The FsCheck configuration for a property with <paramref name="ci"/> cases in CI. Each run draws a
    /// fresh seed; a failure prints it as "(seed,gamma)". SECUREVMM_REPLAY="seed,gamma" replays it.
    /// </summary>
    public static Config CaseConfig(int ci)
    {
        Config config = Config.QuickThrowOnFailure.WithMaxTest(Cases(ci));
        string? replay = Environment.GetEnvironmentVariable("SECUREVMM_REPLAY");
        if (replay is not null && replay.Trim('(', ')', ' ').Split(',') is [var seed, var gamma]
            && ulong.TryParse(seed.Trim(), out ulong s) && ulong.TryParse(gamma.Trim(), out ulong g))
        {
            config = config.WithReplay(new Replay(new Rnd(s, g), Microsoft.FSharp.Core.FSharpOption<int>.None));
        }
        return config;
    }

    /// <summary>The guest's general registers and EIP/EFLAGS, for final-state comparisons.</summary>
    public static uint[] Registers(VirtualMachine vm)
    {
        var regs = new uint[10];
        for (int i = 0; i < 8; i++)
        {
            regs[i] = vm.Cpu.GetGpr((SecureVmm.Tcb.Cpu.Gpr)i);
        }
        regs[8] = vm.Cpu.Eip;
        regs[9] = vm.Cpu.Eflags;
        return regs;
    }
}
