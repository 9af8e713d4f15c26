using Iced.Intel;
using SecureVmm.Policy.Guests;
using static Iced.Intel.AssemblerRegisters;

namespace SecureVmm.Bench;

/// <summary>
/// The comparison workloads: Multiboot guests built with the project's <see cref="GuestBuilder"/>
/// and <see cref="GuestRuntime"/>, so the same bytes boot on SecureVmm and on
/// <c>qemu-system-i386 -kernel</c>. Each does a fixed amount of work, prints one line on COM1 and
/// writes 0 to the isa-debug-exit port (0xF4), so on QEMU the whole process's wall time covers the
/// work and on SecureVmm the VM stops at the same point.
/// </summary>
public static class CompareGuests
{
    /// <summary>A port nothing decodes on SecureVmm's PC (see PcDevices) nor on QEMU's default i440FX PC.</summary>
    public const ushort UnclaimedPort = 0x2E0;

    /// <summary>
    /// Integer workload: <paramref name="passes"/> passes of the checksum loop of the CPU benchmark
    /// (loads, stores, ALU, rotates, LEA, a conditional call) over a 64 KiB buffer at 2 MiB,
    /// flat protected mode, paging off. About 11.5 guest instructions per element, 16384 elements a pass.
    /// </summary>
    public static GuestImage Integer(int passes) => GuestBuilder.Build("cmp-integer", g =>
    {
        Assembler a = g.A;
        GuestRuntime.Prologue(g);
        var outer = a.CreateLabel();
        var mix = a.CreateLabel();
        var done = a.CreateLabel();
        a.mov(ebx, 0x20_0000);
        a.mov(ebp, passes);
        a.Label(ref outer);
        CpuBench.EmitChecksumPass(a, mix);
        a.dec(ebp);
        a.jnz(outer);
        a.jmp(done);
        CpuBench.EmitMix(a, ref mix);
        a.Label(ref done);
        a.mov(eax, edx);
        GuestRuntime.Print(g, "integer checksum ");
        g.Call("rt_hex32");
        GuestRuntime.Print(g, "\n");
        GuestRuntime.ExitAndHalt(g, 0);
        GuestRuntime.EmitLibrary(g);
    });

    /// <summary>
    /// Paging workload: 4 KiB pages identity-mapping 0-8 MiB from two page directories (Intel SDM
    /// vol. 3, 4.3, 32-bit paging); each round touches 256 pages of the 4-8 MiB window (load, add,
    /// store, INVLPG per page, SDM vol. 3, 4.10.4.1) and then switches CR3 to the other directory,
    /// which flushes every non-global translation. <paramref name="rounds"/> rounds.
    /// Tables live at 8 MiB and up (the machine needs at least 16 MiB).
    /// </summary>
    public static GuestImage Paging(int rounds) => GuestBuilder.Build("cmp-paging", g =>
    {
        Assembler a = g.A;
        GuestRuntime.Prologue(g);
        CpuBench.EmitPagingSetup(a, 0x80_0000);
        var loop = a.CreateLabel();
        a.mov(ebx, rounds);
        a.Label(ref loop);
        CpuBench.EmitPagingRound(a);
        a.dec(ebx);
        a.jnz(loop);
        GuestRuntime.Print(g, "paging done\n");
        GuestRuntime.ExitAndHalt(g, 0);
        GuestRuntime.EmitLibrary(g);
    });

    /// <summary>
    /// I/O-exit workload: <paramref name="count"/> byte OUTs to <see cref="UnclaimedPort"/>, each a
    /// VM exit on SecureVmm (every port access exits, and is audited when a log is attached) and an
    /// unassigned-I/O access on QEMU.
    /// </summary>
    public static GuestImage PortIo(int count) => GuestBuilder.Build("cmp-io", g =>
    {
        Assembler a = g.A;
        GuestRuntime.Prologue(g);
        var loop = a.CreateLabel();
        a.mov(dx, UnclaimedPort);
        a.mov(ecx, count);
        a.Label(ref loop);
        a.mov(al, cl);
        a.@out(dx, al);
        a.dec(ecx);
        a.jnz(loop);
        GuestRuntime.Print(g, "io done\n");
        GuestRuntime.ExitAndHalt(g, 0);
        GuestRuntime.EmitLibrary(g);
    });
}
