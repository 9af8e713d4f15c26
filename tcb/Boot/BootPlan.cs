using System.Buffers.Binary;
using SecureVmm.Tcb.Memory;

namespace SecureVmm.Tcb.Boot;

/// <summary>
/// A boot image was malformed or does not fit the VM. <see cref="Offset"/> is the byte offset in
/// the image (or in the named input) of the field that is wrong; the message says what was
/// expected there.
/// </summary>
public sealed class BootImageException : Exception
{
    public BootImageException(long offset, string problem)
        : base($"offset 0x{offset:X}: {problem}")
    {
        Offset = offset;
        Problem = problem;
    }

    public BootImageException() : this(0, "malformed boot image") { }

    public BootImageException(string message) : this(0, message) { }

    public BootImageException(string message, Exception innerException) : base(message, innerException) { Problem = message; }

    /// <summary>Byte offset of the offending field in the input.</summary>
    public long Offset { get; }

    /// <summary>The problem, without the offset prefix.</summary>
    public string Problem { get; } = "";
}

/// <summary>The processor state a boot plan starts in.</summary>
public enum BootCpuMode : byte
{
    /// <summary>32-bit protected mode, paging off, interrupts off, CS = <see cref="BootPlan.CodeSelector"/> and
    /// DS/ES/FS/GS/SS = <see cref="BootPlan.DataSelector"/> from the loader's GDT: flat 4 GiB segments.</summary>
    FlatProtected = 0,
    /// <summary>Real mode at <see cref="BootPlan.RealModeCs"/>:(EntryEip - RealModeCs*16), interrupts off.</summary>
    Real = 1,
}

/// <summary>A guest-physical range a loader filled, for the machine's log and overlap checks.</summary>
public readonly record struct LoadedRegion(ulong Start, ulong Length, string What);

/// <summary>
/// What a loader did and how the CPU must start: the Machine applies it. All general registers not
/// named here start at zero (the Linux 32-bit boot protocol requires EBP, EDI and EBX zero).
/// </summary>
public sealed record BootPlan
{
    public required string Format { get; init; }
    public required BootCpuMode Mode { get; init; }
    public required uint EntryEip { get; init; }
    public uint Eax { get; init; }
    public uint Ebx { get; init; }
    public uint Esi { get; init; }
    public uint Esp { get; init; }
    public uint GdtBase { get; init; }
    public ushort GdtLimit { get; init; }
    public ushort CodeSelector { get; init; }
    public ushort DataSelector { get; init; }
    public ushort RealModeCs { get; init; }
    public IReadOnlyList<LoadedRegion> Regions { get; init; } = [];
}

/// <summary>
/// Layout shared by the loaders: where the boot GDT lives, the PC memory map (low RAM, the
/// 640 KiB-1 MiB hole with the EBDA, VGA and BIOS areas, high RAM) and writing into guest RAM.
/// </summary>
public static class BootLayout
{
    /// <summary>The loader's GDT: null, null, 0x10 flat code, 0x18 flat data (Linux __BOOT_CS/__BOOT_DS).</summary>
    public const uint GdtAddress = 0x1000;
    public const ushort GdtLimit = 4 * 8 - 1;
    public const ushort CodeSelector = 0x10;
    public const ushort DataSelector = 0x18;
    /// <summary>End of usable low RAM: 636 KiB, leaving the top 4 KiB below 640 KiB as the EBDA.</summary>
    public const uint LowRamEnd = 0x9F000;
    public const uint HighRamStart = 0x100000;

    /// <summary>E820 / Multiboot memory types (ACPI 6.4, 15.1 "System address map interfaces").</summary>
    public const uint MemoryTypeUsable = 1, MemoryTypeReserved = 2;

    /// <summary>The PC memory map for <paramref name="ramSize"/> bytes of RAM.</summary>
    public static (ulong Base, ulong Length, uint Type)[] MemoryMap(long ramSize) =>
    [
        (0, LowRamEnd, MemoryTypeUsable),
        (LowRamEnd, HighRamStart - LowRamEnd, MemoryTypeReserved),
        (HighRamStart, (ulong)ramSize - HighRamStart, MemoryTypeUsable),
    ];

    /// <summary>Checks the VM has RAM above 1 MiB at all; loaders need it.</summary>
    public static void RequireHighRam(GuestRam ram, long imageOffsetForErrors)
    {
        if (ram.Size <= HighRamStart + 0x100000)
        {
            throw new BootImageException(imageOffsetForErrors, $"guest RAM of {ram.Size} bytes is too small: at least 2 MiB is needed to boot");
        }
    }

    /// <summary>Writes the flat GDT at <see cref="GdtAddress"/> (Intel SDM vol. 3, 3.4.5 segment descriptors).</summary>
    public static void WriteFlatGdt(GuestRam ram)
    {
        var gdt = ram.Slice(GdtAddress, GdtLimit + 1);
        gdt.Clear();
        // Base 0, limit 0xFFFFF with G=1 (4 GiB), D/B=1 (32-bit), present, DPL 0.
        BinaryPrimitives.WriteUInt64LittleEndian(gdt[16..], 0x00CF_9A00_0000_FFFF); // code: execute/read, accessed clear
        BinaryPrimitives.WriteUInt64LittleEndian(gdt[24..], 0x00CF_9200_0000_FFFF); // data: read/write
    }

    /// <summary>True when [start, start+length) overlaps [otherStart, otherStart+otherLength).</summary>
    public static bool Overlaps(ulong start, ulong length, ulong otherStart, ulong otherLength) =>
        length != 0 && otherLength != 0 && start < otherStart + otherLength && otherStart < start + length;

    internal static ulong AlignUp(ulong value, ulong alignment) => (value + alignment - 1) & ~(alignment - 1);
}

/// <summary>Kinds of boot image the dev-boot command accepts.</summary>
public enum BootImageKind : byte
{
    Unknown = 0,
    Multiboot = 1,
    BzImage = 2,
}

/// <summary>Tells a Multiboot kernel from a bzImage by their headers; anything else is a flat binary to the caller.</summary>
public static class BootImageDetector
{
    public static BootImageKind Detect(ReadOnlySpan<byte> image)
    {
        if (image.Length >= 0x206 && BinaryPrimitives.ReadUInt32LittleEndian(image[0x202..]) == BzImageLoader.HeaderMagic)
        {
            return BootImageKind.BzImage;
        }
        return MultibootLoader.FindHeader(image) >= 0 ? BootImageKind.Multiboot : BootImageKind.Unknown;
    }
}
