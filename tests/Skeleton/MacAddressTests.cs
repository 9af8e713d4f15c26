using SecureVmm.NetFilter;
using Xunit;

namespace SecureVmm.Tests.Skeleton;

public class MacAddressTests
{
    [Theory]
    [InlineData("52:54:00:12:34:56", 0x525400123456UL)]
    [InlineData("ff-ff-ff-ff-ff-ff", 0xFFFFFFFFFFFFUL)]
    public void ParsesAndRoundTrips(string text, ulong value)
    {
        Assert.True(MacAddress.TryParse(text, out var mac));
        Assert.Equal(value, mac.Value);
        Assert.Equal(text.Replace('-', ':'), mac.ToString());
        Span<byte> b = stackalloc byte[6];
        mac.Write(b);
        Assert.Equal(mac, MacAddress.Read(b));
    }

    [Theory]
    [InlineData("")]
    [InlineData("52:54:00:12:34")]
    [InlineData("52:54:00:12:34:5g")]
    [InlineData("52.54.00.12.34.56")]
    public void RejectsMalformed(string text) => Assert.False(MacAddress.TryParse(text, out _));

    [Fact]
    public void MulticastBitIsTheFirstOctetsLowBit()
    {
        Assert.True(MacAddress.Broadcast.IsMulticast);
        Assert.False(new MacAddress(0x525400123456).IsMulticast);
        Assert.True(new MacAddress(0x01005E000001).IsMulticast);
    }
}
