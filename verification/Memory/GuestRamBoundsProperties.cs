using FsCheck;
using FsCheck.Fluent;
using SecureVmm.Tcb.Memory;
using Xunit;

namespace SecureVmm.Verification.Memory;

/// <summary>
/// GuestRam bounds: a range is accessible exactly when it lies inside the VM's own RAM;
/// any other range is refused, whatever the address and length (wrap-around included).
/// </summary>
public class GuestRamBoundsProperties
{
    [Fact]
    public void SliceSucceedsExactlyForRangesInsideRam()
    {
        using var ram = new GuestRam(64 * 1024);
        var addresses = Gen.OneOf(
            Gen.Choose(0, 70_000).Select(v => (ulong)v),
            ArbMap.Default.GeneratorFor<ulong>());
        var lengths = Gen.OneOf(Gen.Choose(0, 70_000), ArbMap.Default.GeneratorFor<int>());
        Prop.ForAll(Arb.From(addresses), Arb.From(lengths), (address, length) =>
        {
            bool inside = length >= 0 && address + (ulong)length >= address && address + (ulong)length <= (ulong)ram.Size;
            bool ok;
            try
            {
                ok = ram.Slice(address, length).Length == length;
            }
            catch (ArgumentOutOfRangeException)
            {
                ok = false;
            }
            return ok == inside;
        }).QuickCheckThrowOnFailure();
    }

    [Fact]
    public void DisposeScrubsContents()
    {
        var ram = new GuestRam(4096);
        ram.Span.Fill(0xAA);
        var view = ram.Span;
        ram.Dispose();
        Assert.True(view.IndexOfAnyExcept((byte)0) < 0, "RAM contents scrubbed");
        Assert.Equal(0, ram.Size);
    }
}
