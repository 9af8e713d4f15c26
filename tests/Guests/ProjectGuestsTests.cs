using System.Buffers.Binary;
using SecureVmm.Policy.Guests;
using SecureVmm.Tests.Support;
using Xunit;
using Xunit.Abstractions;

namespace SecureVmm.Tests.Guests;

public class ProjectGuestsTests(ITestOutputHelper output)
{
    public static TheoryData<string> GuestNames => new(ProjectGuests.Names);

    [Theory]
    [MemberData(nameof(GuestNames))]
    public void EachGuestIsAWellFormedMultibootImage(string name)
    {
        GuestImage image = ProjectGuests.Build(name)!;
        ReadOnlySpan<byte> b = image.Bytes;
        // Multiboot 0.6.96, 3.1.1: magic, flags, checksum with magic+flags+checksum == 0 (mod 2^32),
        // and with flag 16 the address fields.
        uint magic = BinaryPrimitives.ReadUInt32LittleEndian(b);
        uint flags = BinaryPrimitives.ReadUInt32LittleEndian(b[4..]);
        uint checksum = BinaryPrimitives.ReadUInt32LittleEndian(b[8..]);
        Assert.Equal(0x1BADB002u, magic);
        Assert.Equal(0u, unchecked(magic + flags + checksum));
        Assert.NotEqual(0u, flags & (1u << 16));
        uint headerAddr = BinaryPrimitives.ReadUInt32LittleEndian(b[12..]);
        uint loadAddr = BinaryPrimitives.ReadUInt32LittleEndian(b[16..]);
        uint loadEnd = BinaryPrimitives.ReadUInt32LittleEndian(b[20..]);
        uint bssEnd = BinaryPrimitives.ReadUInt32LittleEndian(b[24..]);
        uint entry = BinaryPrimitives.ReadUInt32LittleEndian(b[28..]);
        Assert.Equal(loadAddr, headerAddr);
        Assert.Equal((uint)b.Length, loadEnd - loadAddr);
        Assert.True(bssEnd >= loadEnd);
        Assert.InRange(entry, loadAddr + 32, loadEnd - 1);
        Assert.Equal(image.Entry, entry);
    }

    [Fact]
    public void BuildingIsDeterministic()
    {
        foreach (string name in ProjectGuests.Names)
        {
            Assert.Equal(ProjectGuests.Build(name)!.Bytes, ProjectGuests.Build(name)!.Bytes);
        }
        Assert.Null(ProjectGuests.Build("no-such-guest"));
    }

    [Fact]
    public void HelloRunsOnQemu()
    {
        string? qemu = HostTools.Require("qemu-system-i386", output, "qemu-system-x86");
        if (qemu is null)
        {
            return;
        }
        var result = QemuRunner.Run(qemu, ProjectGuests.Hello().Bytes, TimeSpan.FromSeconds(30));
        output.WriteLine(result.Serial);
        Assert.Contains("Hello from the SecureVmm hello guest", result.Serial, StringComparison.Ordinal);
        Assert.Contains("cpu vendor: ", result.Serial, StringComparison.Ordinal);
        Assert.Equal(1, result.ExitCode); // isa-debug-exit: (0 << 1) | 1
    }

    [Fact]
    public void InteractiveEchoesLinesOnQemu()
    {
        string? qemu = HostTools.Require("qemu-system-i386", output, "qemu-system-x86");
        if (qemu is null)
        {
            return;
        }
        var result = QemuRunner.Run(qemu, ProjectGuests.Interactive("unclass> ").Bytes, TimeSpan.FromSeconds(30),
            input: "hello there\r", sendInputAfter: "unclass> ", stopWhen: "you typed: hello there");
        output.WriteLine(result.Serial);
        Assert.False(result.TimedOut, "no answer to the typed line");
        Assert.Contains("you typed: hello there", result.Serial, StringComparison.Ordinal);
    }

    [Fact]
    public void KioskTicksOnQemu()
    {
        string? qemu = HostTools.Require("qemu-system-i386", output, "qemu-system-x86");
        if (qemu is null)
        {
            return;
        }
        var result = QemuRunner.Run(qemu, ProjectGuests.Kiosk("SECRET KIOSK", 0x4F).Bytes, TimeSpan.FromSeconds(30),
            stopWhen: "kiosk: uptime 2 s");
        output.WriteLine(result.Serial);
        Assert.False(result.TimedOut, "the kiosk's timer did not tick");
        Assert.Contains("kiosk: uptime 1 s", result.Serial, StringComparison.Ordinal);
    }

    [Fact]
    public void CpuHogSpinsOnQemu()
    {
        string? qemu = HostTools.Require("qemu-system-i386", output, "qemu-system-x86");
        if (qemu is null)
        {
            return;
        }
        var result = QemuRunner.Run(qemu, ProjectGuests.CpuHog().Bytes, TimeSpan.FromSeconds(60), stopWhen: "..");
        output.WriteLine(result.Serial);
        Assert.False(result.TimedOut, "no progress dots");
        Assert.Contains("cpu-hog: spinning", result.Serial, StringComparison.Ordinal);
    }
}
