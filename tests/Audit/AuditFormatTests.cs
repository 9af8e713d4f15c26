using FsCheck;
using FsCheck.Fluent;
using SecureVmm.Tcb.Audit;
using SecureVmm.Tcb.Exits;
using Xunit;

namespace SecureVmm.Tests.Audit;

public class AuditFormatTests
{
    [Fact]
    public void VarintRoundTripsAndRefusesOverlongInput()
    {
        Prop.ForAll(ArbMap.Default.ArbFor<ulong>(), value =>
        {
            Span<byte> buffer = stackalloc byte[10];
            int n = AuditFormat.WriteVarint(buffer, value);
            int offset = 0;
            return AuditFormat.TryReadVarint(buffer[..n], ref offset, out ulong back) && back == value && offset == n
                // One byte short must never decode.
                && !AuditFormat.TryReadVarint(buffer[..(n - 1)], ref offset, out _);
        }).QuickCheckThrowOnFailure();
        int o = 0;
        byte[] elevenBytes = [.. Enumerable.Repeat((byte)0xFF, 10), 0x01];
        Assert.False(AuditFormat.TryReadVarint(elevenBytes, ref o, out _));
        o = 0;
        byte[] overflow = [.. Enumerable.Repeat((byte)0xFF, 9), 0x02];
        Assert.False(AuditFormat.TryReadVarint(overflow, ref o, out _));
    }

    [Fact]
    public void EveryKindRoundTripsThroughTheRecordCodec()
    {
        Span<byte> buffer = stackalloc byte[AuditFormat.MaxRecordBytes];
        for (int i = 0; i < 200; i++)
        {
            AuditRecord record = AuditTestLogs.Record(i);
            int n = AuditFormat.EncodeRecord(in record, 3, 1000, buffer);
            Assert.InRange(n, 2, AuditFormat.MaxRecordBytes);
            int offset = 0;
            Assert.Equal(AuditFormat.RecordError.None, AuditFormat.DecodeRecord(buffer[..n], ref offset, 1000, out AuditRecord back, out _));
            Assert.Equal(n, offset);
            Assert.Equal(3UL, back.Sequence);
            Assert.True(AuditTestLogs.SameContent(record, back), $"record {i} ({record.Kind}) changed in the round trip");
        }
    }

    [Fact]
    public void RandomRecordsRoundTripAndFitTheMaximumSize()
    {
        var records =
            from kind in Gen.Elements(Enum.GetValues<AuditKind>())
            from vm in ArbMap.Default.GeneratorFor<ushort>()
            from time in ArbMap.Default.GeneratorFor<ulong>()
            from previous in ArbMap.Default.GeneratorFor<ulong>()
            from eip in ArbMap.Default.GeneratorFor<uint>()
            from value in ArbMap.Default.GeneratorFor<ulong>()
            from address in ArbMap.Default.GeneratorFor<ulong>()
            from sampleLength in Gen.Choose(0, 200)
            select (new VmExit { Kind = (ExitKind)kind, Cs = 0xFFFF, Eip = eip, Port = 0xFFFF, Size = 8, Address = address, Value = value, Leaf = uint.MaxValue, Subleaf = uint.MaxValue, Eax = uint.MaxValue, Ebx = uint.MaxValue, Ecx = uint.MaxValue, Edx = uint.MaxValue },
                    kind, vm, time, previous, value, sampleLength);
        Prop.ForAll(Arb.From(records), t =>
        {
            var (exit, kind, vm, time, previous, value, sampleLength) = t;
            AuditRecord record = kind switch
            {
                AuditKind.FramesDropped => AuditRecord.FramesDropped(vm, time, ushort.MaxValue, uint.MaxValue, value, new byte[sampleLength]),
                AuditKind.VmStop => AuditRecord.VmStop(vm, time, int.MinValue, VmStopReason.VmmFault),
                AuditKind.ImageVerified => AuditRecord.ImageVerified(vm, value, new byte[32]),
                AuditKind.PolicyLoaded => AuditRecord.PolicyLoaded(new byte[32]),
                AuditKind.VmStart => AuditRecord.Event(kind, vm, time),
                _ => AuditRecord.FromExit(exit, vm, ushort.MaxValue, time),
            };
            record.Cs = ushort.MaxValue;
            Span<byte> buffer = stackalloc byte[AuditFormat.MaxRecordBytes];
            int n = AuditFormat.EncodeRecord(in record, AuditFormat.MaxBlockRecordsLimit, previous, buffer);
            int offset = 0;
            var error = AuditFormat.DecodeRecord(buffer[..n], ref offset, previous, out AuditRecord back, out _);
            return n <= AuditFormat.MaxRecordBytes && error == AuditFormat.RecordError.None && AuditTestLogs.SameContent(record, back);
        }).QuickCheckThrowOnFailure();
    }

    [Fact]
    public void RecordMappingTakesOnlyTheFieldsOfTheExitKind()
    {
        VmExit exit = AuditTestLogs.Exit(ExitKind.IoOut, 5);
        AuditRecord io = AuditRecord.FromExit(exit, 1, 2, 777);
        Assert.Equal((AuditKind.IoOut, (ushort)1, (ushort)2, 777UL, (ushort)0x3FD, (byte)4, 35UL, 0UL, 0u),
            (io.Kind, io.VmId, io.Vcpu, io.VirtualTimeNs, io.Port, io.Size, io.Value, io.Address, io.Leaf));
        exit.Kind = ExitKind.Cpuid;
        AuditRecord cpuid = AuditRecord.FromExit(exit, 0, 0, 0);
        Assert.Equal((5u, 1u, 0x06A0u, 0x0800u, 0x8000_0001u, 0xABCDu, (ushort)0, 0UL), (cpuid.Leaf, cpuid.Subleaf, cpuid.Eax, cpuid.Ebx, cpuid.Ecx, cpuid.Edx, cpuid.Port, cpuid.Value));
        exit.Kind = ExitKind.Wrmsr;
        AuditRecord msr = AuditRecord.FromExit(exit, 0, 0, 0);
        Assert.Equal((0xFEE00005UL, 35UL, (byte)0), (msr.Address, msr.Value, msr.Size));
        Assert.Equal((ushort)0x10, msr.Cs);
        Assert.Equal(0x100005u, msr.Eip);
    }

    [Fact]
    public void HeaderRoundTripsAndRejectsBadNames()
    {
        AuditLogHeader header = AuditTestLogs.Header();
        byte[] bytes = header.Encode();
        Assert.Equal("SVMMAUD1"u8.ToArray(), bytes[..8]);
        AuditLogHeader back = AuditLogHeader.Decode(bytes);
        Assert.Equal(header.LogId, back.LogId);
        Assert.Equal(header.CreatedUnixNs, back.CreatedUnixNs);
        Assert.Equal(header.VmNames, back.VmNames);
        Assert.Equal(header.NetworkNames, back.NetworkNames);
        Assert.Throws<AuditLogException>(() => new AuditLogHeader(new byte[16], 0, [""], []));
        Assert.Throws<AuditLogException>(() => new AuditLogHeader(new byte[16], 0, [new string('x', 65)], []));
        Assert.Throws<AuditLogException>(() => new AuditLogHeader(new byte[15], 0, ["a"], []));
        bytes[8] = 2;
        var e = Assert.Throws<AuditLogException>(() => AuditLogHeader.Decode(bytes));
        Assert.Contains("offset 8", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void KindNamesParseAndExitKindsKeepTheirNumbers()
    {
        foreach (ExitKind kind in Enum.GetValues<ExitKind>())
        {
            Assert.Equal((byte)kind, (byte)Enum.Parse<AuditKind>(kind.ToString()));
            Assert.True(AuditKinds.IsExit((AuditKind)kind));
        }
        Assert.True(AuditKinds.TryParse("io-out", out AuditKind k) && k == AuditKind.IoOut);
        Assert.True(AuditKinds.TryParse("frames_dropped", out k) && k == AuditKind.FramesDropped);
        Assert.True(AuditKinds.TryParse("6", out k) && k == AuditKind.Cpuid);
        Assert.False(AuditKinds.TryParse("12", out _));
        Assert.False(AuditKinds.TryParse("teleport", out _));
        Assert.False(AuditKinds.IsExit(AuditKind.VmStart));
    }
}
