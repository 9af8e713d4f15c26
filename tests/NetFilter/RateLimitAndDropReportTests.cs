using SecureVmm.TestSupport;
using SecureVmm.NetFilter;
using Xunit;
using static SecureVmm.Tests.NetFilter.TestNet;

namespace SecureVmm.Tests.NetFilter;

public class RateLimitAndDropReportTests
{
    private static readonly byte[] Frame = Out4(IpProtocols.Udp, FrameBuilder.Udp(1, 2, new byte[58])); // 100 bytes

    private sealed class CollectingSink : IDropSink
    {
        public List<DropReport> Reports { get; } = [];

        public void OnDrops(DropReport report) => Reports.Add(report);
    }

    [Fact]
    public void FrameRateBurstsThenRefillsWithTheClock()
    {
        var clock = new ManualTimeProvider();
        var filter = new Filter(Config(AllowAll) with { OutboundRate = new RateLimit(FramesPerSecond: 10, BytesPerSecond: 0, BurstFrames: 5) }, clock);
        for (int i = 0; i < 5; i++)
        {
            Assert.True(filter.Outbound(Frame).IsAllowed, $"burst frame {i}");
        }
        var limited = filter.Outbound(Frame);
        Assert.Equal(DropReason.RateLimited, limited.Reason);
        Assert.Equal(0, limited.RuleIndex); // the rule that matched is reported with the drop
        clock.Advance(TimeSpan.FromMilliseconds(99));
        Assert.False(filter.Outbound(Frame).IsAllowed);
        clock.Advance(TimeSpan.FromMilliseconds(1)); // 100 ms at 10/s = one token
        Assert.True(filter.Outbound(Frame).IsAllowed);
        Assert.False(filter.Outbound(Frame).IsAllowed);
        clock.Advance(TimeSpan.FromHours(10)); // refill caps at the burst
        for (int i = 0; i < 5; i++)
        {
            Assert.True(filter.Outbound(Frame).IsAllowed);
        }
        Assert.False(filter.Outbound(Frame).IsAllowed);
        // Inbound has its own (here: no) limit.
        Assert.True(filter.Inbound(In4(IpProtocols.Udp, FrameBuilder.Udp(1, 2))).IsAllowed);
    }

    [Fact]
    public void ByteRateCountsFrameLengths()
    {
        var clock = new ManualTimeProvider();
        var filter = new Filter(Config(AllowAll) with { MaxFrameBytes = 1518, InboundRate = new RateLimit(0, BytesPerSecond: 2000, BurstBytes: 1518) }, clock);
        var inbound = In4(IpProtocols.Udp, FrameBuilder.Udp(1, 2, new byte[458])); // 500 bytes
        Assert.Equal(500, inbound.Length);
        Assert.True(filter.Inbound(inbound).IsAllowed);
        Assert.True(filter.Inbound(inbound).IsAllowed);
        Assert.True(filter.Inbound(inbound).IsAllowed);
        Assert.Equal(DropReason.RateLimited, filter.Inbound(inbound).Reason); // 18 bytes left
        clock.Advance(TimeSpan.FromMilliseconds(241)); // 482 more bytes at 2000 B/s
        Assert.True(filter.Inbound(inbound).IsAllowed);
        Assert.False(filter.Inbound(inbound).IsAllowed);
    }

    [Fact]
    public void DropsAreCountedPerReasonAndDirection()
    {
        var filter = new Filter(Config());
        filter.Outbound(Frame);
        filter.Outbound(Frame);
        filter.Outbound(new byte[3]);
        filter.Inbound(In4(IpProtocols.Udp, FrameBuilder.Udp(1, 2), destinationMac: OtherMac));
        var c = filter.ReadCounters();
        Assert.Contains(new DropCount(FrameDirection.Outbound, DropReason.NoMatchingRule, 2), c.Drops);
        Assert.Contains(new DropCount(FrameDirection.Outbound, DropReason.FrameTooSmall, 1), c.Drops);
        Assert.Contains(new DropCount(FrameDirection.Inbound, DropReason.NotForThisVm, 1), c.Drops);
        Assert.Equal(3, c.DroppedFrames(FrameDirection.Outbound));
        Assert.Equal(1, c.DroppedFrames(FrameDirection.Inbound));
    }

    [Fact]
    public void AFloodGivesExactCountsButFewSamples()
    {
        var clock = new ManualTimeProvider();
        var sink = new CollectingSink();
        var sampling = new DropSamplingOptions { SamplesPerReasonPerSecond = 3, MaxSamplesPerReport = 10, SampleBytes = 20 };
        var filter = new Filter(Config(), clock, sink, sampling);
        for (int i = 0; i < 100_000; i++)
        {
            filter.Outbound(Frame);
        }
        filter.Inbound(new byte[5]);
        var report = filter.Flush();
        Assert.NotNull(report);
        Assert.Same(report, Assert.Single(sink.Reports));
        Assert.Equal(100_001, report.TotalDrops);
        Assert.Contains(new DropCount(FrameDirection.Outbound, DropReason.NoMatchingRule, 100_000), report.Counts);
        Assert.Contains(new DropCount(FrameDirection.Inbound, DropReason.FrameTooSmall, 1), report.Counts);
        Assert.Equal(4, report.Samples.Count);
        Assert.Equal(100_001 - 4, report.UnsampledDrops);
        var sample = report.Samples[0];
        Assert.Equal(FrameDirection.Outbound, sample.Direction);
        Assert.Equal(DropReason.NoMatchingRule, sample.Reason);
        Assert.Equal(Frame.Length, sample.FrameLength);
        Assert.Equal(Frame.AsSpan(0, 20).ToArray(), sample.Head.ToArray());
        Assert.Equal(5, report.Samples[3].Head.Length);

        // Nothing new: no report. Next second: sampling starts again, counts restart from zero.
        Assert.Null(filter.Flush());
        clock.Advance(TimeSpan.FromSeconds(1));
        for (int i = 0; i < 10; i++)
        {
            filter.Outbound(Frame);
        }
        report = filter.Flush();
        Assert.NotNull(report);
        Assert.Equal(10, report.TotalDrops);
        Assert.Equal(3, report.Samples.Count);
    }

    [Fact]
    public void SamplesPerReportAreCappedAcrossReasons()
    {
        var clock = new ManualTimeProvider();
        var filter = new Filter(Config(), clock, null, new DropSamplingOptions { SamplesPerReasonPerSecond = 100, MaxSamplesPerReport = 7 });
        for (int i = 0; i < 50; i++)
        {
            filter.Outbound(Frame);
            filter.Inbound(new byte[i % 14]);
        }
        var report = filter.Flush()!;
        Assert.Equal(7, report.Samples.Count);
        Assert.Equal(93, report.UnsampledDrops);
        Assert.Equal(100, report.TotalDrops);
    }

    [Fact]
    public void FlushIfDueWaitsForTheInterval()
    {
        var clock = new ManualTimeProvider();
        var sink = new CollectingSink();
        var filter = new Filter(Config(), clock, sink, flushInterval: TimeSpan.FromSeconds(5));
        filter.Outbound(Frame);
        Assert.Null(filter.FlushIfDue());
        clock.Advance(TimeSpan.FromSeconds(4));
        Assert.Null(filter.FlushIfDue());
        clock.Advance(TimeSpan.FromSeconds(1));
        Assert.NotNull(filter.FlushIfDue());
        Assert.Single(sink.Reports);
        Assert.Equal(5 * ManualTimeProvider.Frequency, sink.Reports[0].WindowEnd - sink.Reports[0].WindowStart);
    }

    [Fact]
    public void DecidingAnAllowedFrameDoesNotAllocate()
    {
        var filter = new Filter(Config(new AllowRule { IpProtocol = IpProtocols.Udp, DestinationPorts = NumberRange.Single(2) }) with
        {
            OutboundRate = new RateLimit(1_000_000_000, 0),
        });
        filter.Outbound(Frame);
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 1000; i++)
        {
            filter.Outbound(Frame);
        }
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }

    [Fact]
    public void DroppingAFrameDoesNotAllocate()
    {
        var filter = new Filter(Config());
        filter.Outbound(Frame);
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 1000; i++)
        {
            filter.Outbound(Frame);
        }
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }
}

public class RateLimitExtremesTests
{
    [Fact]
    public void HugeRatesAndLongGapsNeitherOverflowNorBlock()
    {
        var clock = new ManualTimeProvider();
        var frame = Out4(IpProtocols.Udp, FrameBuilder.Udp(1, 2));
        var filter = new Filter(Config(AllowAll) with { OutboundRate = new RateLimit(100_000_000_000, 100_000_000_000, 100_000_000_000, 100_000_000_000) }, clock);
        for (int i = 0; i < 1000; i++)
        {
            Assert.True(filter.Outbound(frame).IsAllowed);
            clock.Advance(TimeSpan.FromDays(i));
        }
    }

    [Fact]
    public void OneFramePerSecondIsExact()
    {
        var clock = new ManualTimeProvider();
        var frame = Out4(IpProtocols.Udp, FrameBuilder.Udp(1, 2));
        var filter = new Filter(Config(AllowAll) with { OutboundRate = new RateLimit(1, 0) }, clock);
        int allowed = 0;
        for (int ms = 0; ms < 10_000; ms += 10)
        {
            allowed += filter.Outbound(frame).IsAllowed ? 1 : 0;
            clock.Advance(TimeSpan.FromMilliseconds(10));
        }
        Assert.Equal(10, allowed); // the initial burst of one, then one per second for 9.99 s
    }
}
