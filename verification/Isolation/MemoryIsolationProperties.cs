using System.Security.Cryptography;
using FsCheck;
using FsCheck.Fluent;
using SecureVmm.Tcb.Exits;
using SecureVmm.Tcb.Machine;
using Xunit;

namespace SecureVmm.Verification.Isolation;

/// <summary>
/// Property 1, memory isolation. VM A runs a random straight-line program (loads and stores inside
/// its RAM and far outside it, port I/O, CPUID, MSRs, control-register reads) while VM B exists beside
/// it with its RAM filled with a secret pattern. Shows: B's RAM is byte-identical before and after;
/// every access A makes outside its own RAM reaches the VMM as an MMIO exit at exactly that address
/// (with the written value), never as a write to memory; A's own RAM holds what A stored.
/// A second fact runs the same checks over mode-switching programs (paging with random page tables, CPL 3,
/// real mode, random descriptor tables), against the generator's page-table model.
/// Does not show: isolation against host-side channels (timing, caches).
/// </summary>
public class MemoryIsolationProperties
{
    [Fact]
    public void OtherVmsRamIsUntouchedAndOutsideAccessesAreExits()
    {
        var secret = new byte[GuestPrograms.RamBytes];
        RandomNumberGenerator.Fill(secret);
        using var b = GuestPrograms.Create(GuestPrograms.Build("b", []), null, "b");
        secret.CopyTo(b.Ram.Span);
        byte[] before = SHA256.HashData(b.Ram.Span);

        Prop.ForAll(Arb.From(GuestPrograms.Programs()), ops =>
        {
            var trace = new TraceRecorder();
            using var a = GuestPrograms.Create(GuestPrograms.Build("a", ops), trace, "a");
            Assert.True(GuestPrograms.RunBounded(a, 1_000_000, TimeSpan.FromSeconds(20)), "VM A did not stop");
            Assert.Equal(StopReason.PowerOff, a.Outcome.Reason);

            Assert.Equal(before, SHA256.HashData(b.Ram.Span));

            // Every MMIO exit names an address that is not A's RAM (or the VGA window, a named device).
            foreach (ExitTraceEntry e in trace.Exits.Where(e => e.Kind is ExitKind.MmioRead or ExitKind.MmioWrite))
            {
                bool vga = e.Address is >= 0xA0000 and < 0xC0000;
                Assert.True(vga || e.Address >= (ulong)GuestPrograms.RamBytes, $"MMIO exit inside RAM at 0x{e.Address:X}");
            }

            // Each store outside RAM became exactly one MmioWrite exit with its value, in program order.
            var outsideStores = ops.Where(o => o.Kind == GuestOpKind.StoreOutside).Select(o => (ulong)o.Address << 32 | o.Value).ToList();
            var writes = trace.Exits.Where(e => e.Kind == ExitKind.MmioWrite && e.Address >= GuestPrograms.OutsideBase)
                .Select(e => e.Address << 32 | e.Value).ToList();
            Assert.Equal(outsideStores, writes);

            // The last in-RAM store to each scratch address is what A's RAM holds.
            var last = new Dictionary<uint, uint>();
            foreach (GuestOp o in ops.Where(o => o.Kind == GuestOpKind.StoreRam))
            {
                last[o.Address] = o.Value;
            }
            foreach (var (address, value) in last)
            {
                Assert.Equal(value, BitConverter.ToUInt32(a.Ram.Span.Slice((int)address, 4)));
            }
        }).Check(GuestPrograms.CaseConfig(150));
    }

    /// <summary>
    /// The same under mode switches (<see cref="ModePrograms"/>): with paging on over random page tables (frames
    /// inside and outside RAM, random present/RW/US/PS bits, remapped with INVLPG or MOV CR3), at CPL 3, in real
    /// mode, with random descriptor tables. B's RAM is unchanged; every MMIO exit names a physical address outside
    /// A's RAM; the MMIO writes are exactly the stores the page-table model sends outside RAM (translated address
    /// and value, in order), so an access that must page-fault (not present, supervisor-only at CPL 3, read-only
    /// with CR0.WP or at CPL 3) reaches neither memory nor a device; A's RAM holds A's last store to each
    /// translated in-RAM address.
    /// </summary>
    [Fact]
    public void OtherVmsRamIsUntouchedUnderPagingUserModeAndModeSwitches()
    {
        var secret = new byte[GuestPrograms.RamBytes];
        RandomNumberGenerator.Fill(secret);
        using var b = GuestPrograms.Create(GuestPrograms.Build("b", []), null, "b");
        secret.CopyTo(b.Ram.Span);
        byte[] before = SHA256.HashData(b.Ram.Span);

        Prop.ForAll(Arb.From(ModePrograms.Programs()), program =>
        {
            var trace = new TraceRecorder();
            using var a = GuestPrograms.Create(ModePrograms.Build("a", program), trace, "a");
            Assert.True(GuestPrograms.RunBounded(a, 2_000_000, TimeSpan.FromSeconds(20)), "VM A did not stop");
            Assert.True(a.Outcome.Reason == StopReason.PowerOff, $"{a.Outcome.Reason} {a.Outcome.Message}\n{ModePrograms.Describe(program)}");

            Assert.Equal(before, SHA256.HashData(b.Ram.Span));

            foreach (ExitTraceEntry e in trace.Exits.Where(e => e.Kind is ExitKind.MmioRead or ExitKind.MmioWrite))
            {
                bool vga = e.Address is >= 0xA0000 and < 0xC0000;
                Assert.True(vga || e.Address >= (ulong)GuestPrograms.RamBytes, $"MMIO exit inside RAM at 0x{e.Address:X}");
            }

            var expectedWrites = program.ExpectedExits.Where(x => x.Kind == ExitKind.MmioWrite).Select(x => x.Address << 32 | x.Value!.Value).ToList();
            var writes = trace.Exits.Where(e => e.Kind == ExitKind.MmioWrite && e.Address >= GuestPrograms.OutsideBase)
                .Select(e => e.Address << 32 | e.Value).ToList();
            Assert.True(expectedWrites.SequenceEqual(writes),
                $"MMIO writes: expected [{string.Join(", ", expectedWrites.Select(w => w.ToString("X16")))}], got [{string.Join(", ", writes.Select(w => w.ToString("X16")))}]\n{ModePrograms.Describe(program)}");

            var last = new Dictionary<uint, uint>();
            foreach (var (physical, value) in program.RamStores)
            {
                last[physical] = value;
            }
            foreach (var (address, value) in last)
            {
                uint actual = BitConverter.ToUInt32(a.Ram.Span.Slice((int)address, 4));
                Assert.True(value == actual, $"RAM 0x{address:X}: expected 0x{value:X8}, holds 0x{actual:X8}\n{ModePrograms.Describe(program)}");
            }
        }).Check(GuestPrograms.CaseConfig(200));
    }
}
