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
/// Does not show: isolation under paging (the generated programs run with paging off), or against
/// host-side channels (timing, caches).
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
}
