using SecureVmm.Tcb.Devices;

namespace SecureVmm.Tcb.Memory;

/// <summary>What a guest-physical address decodes to.</summary>
public enum PhysicalRegionKind : byte
{
    /// <summary>Nothing: reads return all-ones, writes are ignored (both still produce an exit).</summary>
    Unmapped = 0,
    Ram = 1,
    Rom = 2,
    Mmio = 3,
}

/// <summary>
/// The guest-physical address map of one VM: RAM from address 0 (one <see cref="GuestRam"/>),
/// ROM images and MMIO device windows overlaid on it. Regions never overlap each other; a ROM or
/// MMIO region may shadow RAM (as the PC's BIOS ROM shadows RAM below 1 MiB). The map is fixed
/// before the CPU runs: regions added later are not seen by TLB entries already filled.
/// </summary>
public sealed class PhysicalMemoryMap
{
    private const int PageShift = 12;
    private const int PageCount = 1 << (32 - PageShift);

    private readonly List<Region> _regions = [];
    // One bit per 4 KiB guest-physical page: set when any ROM or MMIO region touches the page,
    // so the RAM fast path needs no region search.
    private readonly ulong[] _overlay = new ulong[PageCount / 64];

    public PhysicalMemoryMap(GuestRam ram)
    {
        ArgumentNullException.ThrowIfNull(ram);
        Ram = ram;
        if ((ulong)ram.Size > 0x1_0000_0000UL)
        {
            throw new ArgumentOutOfRangeException(nameof(ram), "guest RAM exceeds the 4 GiB physical address space");
        }
    }

    public GuestRam Ram { get; }

    /// <summary>Raised (with guest-physical address and length) when something other than the CPU writes RAM
    /// through <see cref="WriteRam"/>, so the CPU can drop decoded code for those pages.</summary>
    internal Action<uint, int>? RamWritten { get; set; }

    /// <summary>Maps a read-only image at <paramref name="baseAddress"/>; guest writes to it are ignored (and produce an exit).</summary>
    public void AddRom(uint baseAddress, ReadOnlySpan<byte> contents)
    {
        if (contents.Length == 0)
        {
            throw new ArgumentException("ROM image is empty", nameof(contents));
        }
        Add(new Region(PhysicalRegionKind.Rom, baseAddress, (uint)contents.Length, contents.ToArray(), null));
    }

    /// <summary>Maps an MMIO window of <paramref name="length"/> bytes at <paramref name="baseAddress"/> to <paramref name="device"/>.</summary>
    public void AddMmio(uint baseAddress, uint length, IMmioDevice device)
    {
        ArgumentNullException.ThrowIfNull(device);
        if (length == 0)
        {
            throw new ArgumentOutOfRangeException(nameof(length), "MMIO window is empty");
        }
        Add(new Region(PhysicalRegionKind.Mmio, baseAddress, length, null, device));
    }

    private void Add(Region region)
    {
        ulong end = (ulong)region.Base + region.Length;
        if (end > 0x1_0000_0000UL)
        {
            throw new ArgumentOutOfRangeException(nameof(region), $"region 0x{region.Base:X8}+0x{region.Length:X} runs past 4 GiB");
        }
        foreach (var r in _regions)
        {
            if (region.Base < (ulong)r.Base + r.Length && r.Base < end)
            {
                throw new ArgumentException($"region 0x{region.Base:X8}+0x{region.Length:X} overlaps 0x{r.Base:X8}+0x{r.Length:X}");
            }
        }
        _regions.Add(region);
        for (ulong page = region.Base >> PageShift; page <= (end - 1) >> PageShift; page++)
        {
            _overlay[page >> 6] |= 1UL << (int)(page & 63);
        }
    }

    /// <summary>True when the whole 4 KiB page holding <paramref name="address"/> is plain RAM (no overlay).</summary>
    public bool IsPlainRamPage(uint address)
    {
        uint page = address >> PageShift;
        return (_overlay[page >> 6] & (1UL << (int)(page & 63))) == 0
            && ((ulong)page << PageShift) + 4096 <= (ulong)Ram.Size;
    }

    /// <summary>Decodes one guest-physical address.</summary>
    public PhysicalRegionKind Decode(uint address, out IMmioDevice? device, out uint offset, out byte[]? rom)
    {
        device = null;
        rom = null;
        offset = 0;
        uint page = address >> PageShift;
        if ((_overlay[page >> 6] & (1UL << (int)(page & 63))) != 0)
        {
            foreach (var r in _regions)
            {
                if (address - r.Base < r.Length)
                {
                    offset = address - r.Base;
                    device = r.Device;
                    rom = r.Rom;
                    return r.Kind;
                }
            }
        }
        if (address < (ulong)Ram.Size)
        {
            offset = address;
            return PhysicalRegionKind.Ram;
        }
        return PhysicalRegionKind.Unmapped;
    }

    /// <summary>
    /// A write into RAM by a device or loader (DMA, image load): bounded by RAM and announced to the
    /// CPU so decoded code for those pages is dropped (self-modifying-code correctness for DMA).
    /// </summary>
    public void WriteRam(uint address, ReadOnlySpan<byte> data)
    {
        data.CopyTo(Ram.Slice(address, data.Length));
        RamWritten?.Invoke(address, data.Length);
    }

    private sealed record Region(PhysicalRegionKind Kind, uint Base, uint Length, byte[]? Rom, IMmioDevice? Device);
}
