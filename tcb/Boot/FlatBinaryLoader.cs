using SecureVmm.Tcb.Memory;

namespace SecureVmm.Tcb.Boot;

/// <summary>
/// Loads a flat binary: the bytes as they are at a given guest-physical address, entered at a
/// given address in flat protected mode (with the loader's GDT) or in real mode.
/// </summary>
public static class FlatBinaryLoader
{
    public static BootPlan Load(GuestRam ram, ReadOnlySpan<byte> image, uint loadAddress, uint entry, BootCpuMode mode)
    {
        ArgumentNullException.ThrowIfNull(ram);
        if (image.Length == 0)
        {
            throw new BootImageException(0, "the flat binary is empty");
        }
        if (!ram.Contains(loadAddress, (ulong)image.Length))
        {
            throw new BootImageException(image.Length, $"the flat binary of {image.Length} bytes at 0x{loadAddress:X} does not fit in guest RAM of {ram.Size} bytes");
        }
        if (entry >= ram.Size)
        {
            throw new BootImageException(0, $"entry point 0x{entry:X} is outside guest RAM of {ram.Size} bytes");
        }
        var regions = new List<LoadedRegion> { new(loadAddress, (ulong)image.Length, "flat binary") };
        if (mode == BootCpuMode.Real)
        {
            if ((ulong)loadAddress + (ulong)image.Length > 0x100000 || entry >= 0x100000)
            {
                throw new BootImageException(0, $"a real-mode binary must load and start below 1 MiB (load 0x{loadAddress:X}+{image.Length}, entry 0x{entry:X})");
            }
            image.CopyTo(ram.Slice(loadAddress, image.Length));
            return new BootPlan
            {
                Format = "flat binary (real mode)",
                Mode = BootCpuMode.Real,
                EntryEip = entry,
                RealModeCs = (ushort)((entry >> 4) & 0xF000),
                Regions = regions,
            };
        }
        if (BootLayout.Overlaps(loadAddress, (ulong)image.Length, BootLayout.GdtAddress, BootLayout.GdtLimit + 1u))
        {
            throw new BootImageException(0, $"the flat binary at 0x{loadAddress:X}+{image.Length} overlaps the boot GDT at 0x{BootLayout.GdtAddress:X}");
        }
        image.CopyTo(ram.Slice(loadAddress, image.Length));
        BootLayout.WriteFlatGdt(ram);
        regions.Add(new(BootLayout.GdtAddress, BootLayout.GdtLimit + 1u, "boot GDT"));
        return new BootPlan
        {
            Format = "flat binary",
            Mode = BootCpuMode.FlatProtected,
            EntryEip = entry,
            GdtBase = BootLayout.GdtAddress,
            GdtLimit = BootLayout.GdtLimit,
            CodeSelector = BootLayout.CodeSelector,
            DataSelector = BootLayout.DataSelector,
            Regions = regions,
        };
    }
}
