using System.Buffers.Binary;
using System.Text;
using SecureVmm.Tcb.Memory;

namespace SecureVmm.Tcb.Boot;

/// <summary>
/// Linux bzImage loader using the 32-bit boot protocol (Linux Documentation/arch/x86/boot.rst,
/// "32-bit boot protocol"): the real-mode setup code is not run. The loader checks the setup
/// header ("HdrS", protocol 2.02 or later, a bzImage loaded high), copies the protected-mode
/// kernel to code32_start (1 MiB), builds boot_params (the "zero page": the setup header copied
/// in, type_of_loader, loadflags, cmd_line_ptr, ramdisk, an E820 map, screen_info for the VGA text
/// console), places the initrd as high as initrd_addr_max and RAM allow, and enters at
/// code32_start with ESI = boot_params, flat __BOOT_CS (0x10) / __BOOT_DS (0x18) segments from
/// a GDT in guest RAM, interrupts off and EBP = EDI = EBX = 0.
/// </summary>
public static class BzImageLoader
{
    /// <summary>"HdrS" at offset 0x202.</summary>
    public const uint HeaderMagic = 0x53726448;
    public const uint BootParamsAddress = 0x10000;
    public const uint CommandLineAddress = 0x20000;
    private const int CommandLineAreaSize = 0x10000;

    // Setup header fields (boot.rst, "The real-mode kernel header"), as offsets in the image and in boot_params.
    private const int SetupSects = 0x1F1, SysSize = 0x1F4, VidMode = 0x1FA, BootFlag = 0x1FE, Jump = 0x200, Header = 0x202,
        Version = 0x206, TypeOfLoader = 0x210, LoadFlags = 0x211, Code32Start = 0x214, RamdiskImage = 0x218,
        RamdiskSize = 0x21C, HeapEndPtr = 0x224, CmdLinePtr = 0x228, InitrdAddrMax = 0x22C, CmdlineSize = 0x238,
        PrefAddress = 0x258, InitSize = 0x260;
    // boot_params fields outside the setup header (arch/x86/include/uapi/asm/bootparam.h).
    private const int ExtMemK = 0x002, AltMemK = 0x1E0, E820Entries = 0x1E8, E820Table = 0x2D0, E820MaxEntries = 128;
    private const byte LoadedHigh = 0x01, CanUseHeap = 0x80;

    public static BootPlan Load(GuestRam ram, ReadOnlySpan<byte> image, string commandLine, ReadOnlySpan<byte> initrd, bool vgaTextConsole = true)
    {
        ArgumentNullException.ThrowIfNull(ram);
        commandLine ??= "";
        if (image.Length < InitSize + 4)
        {
            throw new BootImageException(image.Length, $"file of {image.Length} bytes is too short for a bzImage setup header (needs at least {InitSize + 4})");
        }
        if (BinaryPrimitives.ReadUInt16LittleEndian(image[BootFlag..]) != 0xAA55)
        {
            throw new BootImageException(BootFlag, $"boot_flag is 0x{BinaryPrimitives.ReadUInt16LittleEndian(image[BootFlag..]):X4}, expected 0xAA55");
        }
        if (BinaryPrimitives.ReadUInt32LittleEndian(image[Header..]) != HeaderMagic)
        {
            throw new BootImageException(Header, "no \"HdrS\" setup header signature: not a Linux bzImage, or a kernel older than boot protocol 2.00");
        }
        ushort version = BinaryPrimitives.ReadUInt16LittleEndian(image[Version..]);
        if (version < 0x0202)
        {
            throw new BootImageException(Version, $"boot protocol {version >> 8}.{version & 0xFF:D2} is older than 2.02, the first with the 32-bit entry and cmd_line_ptr");
        }
        byte loadFlags = image[LoadFlags];
        if ((loadFlags & LoadedHigh) == 0)
        {
            throw new BootImageException(LoadFlags, "loadflags LOADED_HIGH is clear: a zImage loaded at 0x10000 is not supported, only bzImage");
        }
        int setupSects = image[SetupSects] == 0 ? 4 : image[SetupSects];
        int kernelOffset = (setupSects + 1) * 512;
        if (kernelOffset >= image.Length)
        {
            throw new BootImageException(SetupSects, $"setup_sects {setupSects} puts the protected-mode kernel at {kernelOffset}, at or past the end of the {image.Length}-byte file");
        }
        int kernelLength = image.Length - kernelOffset;
        uint sysSize = BinaryPrimitives.ReadUInt32LittleEndian(image[SysSize..]);
        if (version >= 0x0204 && (ulong)sysSize * 16 > (ulong)kernelLength)
        {
            throw new BootImageException(SysSize, $"syssize says the protected-mode kernel is {(ulong)sysSize * 16} bytes but only {kernelLength} follow the setup code: the file is truncated");
        }
        // The header ends at 0x202 + the jump's displacement byte: at most 0x301, always inside the
        // setup sectors (at least one 512-byte sector after the boot sector).
        int headerEnd = Jump + 2 + image[Jump + 1];
        uint code32Start = BinaryPrimitives.ReadUInt32LittleEndian(image[Code32Start..]);
        if (code32Start < BootLayout.HighRamStart)
        {
            throw new BootImageException(Code32Start, $"code32_start 0x{code32Start:X} is below 1 MiB");
        }
        BootLayout.RequireHighRam(ram, Code32Start);
        if (!ram.Contains(code32Start, (ulong)kernelLength))
        {
            throw new BootImageException(Code32Start, $"the {kernelLength}-byte kernel at code32_start 0x{code32Start:X} does not fit in guest RAM of {ram.Size} bytes");
        }
        // The decompressed kernel runs at its preferred address (pref_address, protocol 2.10+:
        // CONFIG_PHYSICAL_START, 16 MiB on Debian) when loaded below it, and needs init_size bytes
        // from there before it reads the memory map (boot.rst, "init_size").
        ulong initSize = version >= 0x020A ? BinaryPrimitives.ReadUInt32LittleEndian(image[InitSize..]) : 0;
        ulong runtimeStart = version >= 0x020A ? Math.Max(code32Start, BinaryPrimitives.ReadUInt64LittleEndian(image[PrefAddress..])) : code32Start;
        if (!ram.Contains(runtimeStart, initSize))
        {
            throw new BootImageException(InitSize,
                $"the kernel needs init_size 0x{initSize:X} bytes from its run address 0x{runtimeStart:X}, more than guest RAM of {ram.Size} bytes");
        }
        ulong kernelFootprintEnd = Math.Max(code32Start + (ulong)kernelLength, runtimeStart + initSize);

        int cmdlineMax = version >= 0x0206 ? (int)Math.Min(BinaryPrimitives.ReadUInt32LittleEndian(image[CmdlineSize..]), CommandLineAreaSize - 1) : 255;
        byte[] cmdline = Encoding.UTF8.GetBytes(commandLine);
        if (cmdline.Length > cmdlineMax || cmdline.Contains((byte)0))
        {
            throw new BootImageException(version >= 0x0206 ? CmdlineSize : Version,
                cmdline.Contains((byte)0) ? "the command line contains a NUL byte" : $"the command line is {cmdline.Length} bytes; this kernel takes at most {cmdlineMax} (cmdline_size)");
        }

        // The initrd goes as high as allowed: below initrd_addr_max and the top of RAM, page aligned,
        // and above everything the kernel will use while decompressing (boot.rst, "ramdisk_image").
        uint initrdAddress = 0;
        if (initrd.Length > 0)
        {
            ulong addrMax = version >= 0x0203 ? BinaryPrimitives.ReadUInt32LittleEndian(image[InitrdAddrMax..]) : 0x37FF_FFFF;
            ulong limit = Math.Min(addrMax + 1, (ulong)ram.Size);
            ulong kernelEnd = kernelFootprintEnd;
            if ((ulong)initrd.Length > limit || ((limit - (ulong)initrd.Length) & ~0xFFFul) < kernelEnd)
            {
                throw new BootImageException(version >= 0x0203 ? InitrdAddrMax : Version,
                    $"the initrd of {initrd.Length} bytes does not fit between the kernel's end 0x{kernelEnd:X} and min(initrd_addr_max 0x{addrMax:X}, RAM top 0x{ram.Size:X})");
            }
            initrdAddress = (uint)((limit - (ulong)initrd.Length) & ~0xFFFul);
        }

        // Everything checked: write guest RAM.
        var regions = new List<LoadedRegion>();
        image[kernelOffset..].CopyTo(ram.Slice(code32Start, kernelLength));
        regions.Add(new(code32Start, (ulong)kernelLength, "protected-mode kernel"));
        if (initrd.Length > 0)
        {
            initrd.CopyTo(ram.Slice(initrdAddress, initrd.Length));
            regions.Add(new(initrdAddress, (ulong)initrd.Length, "initrd"));
        }
        var cmdlineTarget = ram.Slice(CommandLineAddress, cmdline.Length + 1);
        cmdline.CopyTo(cmdlineTarget);
        cmdlineTarget[^1] = 0;
        regions.Add(new(CommandLineAddress, (ulong)cmdline.Length + 1, "command line"));

        var zeroPage = ram.Slice(BootParamsAddress, 4096);
        zeroPage.Clear();
        image[SetupSects..headerEnd].CopyTo(zeroPage[SetupSects..]);
        BinaryPrimitives.WriteUInt16LittleEndian(zeroPage[VidMode..], 0xFFFF); // "normal" VGA mode
        zeroPage[TypeOfLoader] = 0xFF;                                          // undefined boot loader
        zeroPage[LoadFlags] = (byte)((loadFlags | CanUseHeap) & ~0x20);         // heap usable; QUIET_FLAG off
        BinaryPrimitives.WriteUInt16LittleEndian(zeroPage[HeapEndPtr..], 0xDE00); // boot.rst: heap end 0xE000 - 0x200
        BinaryPrimitives.WriteUInt32LittleEndian(zeroPage[CmdLinePtr..], CommandLineAddress);
        BinaryPrimitives.WriteUInt32LittleEndian(zeroPage[RamdiskImage..], initrdAddress);
        BinaryPrimitives.WriteUInt32LittleEndian(zeroPage[RamdiskSize..], (uint)initrd.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(zeroPage[Code32Start..], code32Start);

        long extendedKiB = (ram.Size - BootLayout.HighRamStart) / 1024;
        BinaryPrimitives.WriteUInt16LittleEndian(zeroPage[ExtMemK..], (ushort)Math.Min(extendedKiB, 0xFFFF));
        BinaryPrimitives.WriteUInt32LittleEndian(zeroPage[AltMemK..], (uint)extendedKiB);
        var map = BootLayout.MemoryMap(ram.Size);
        zeroPage[E820Entries] = (byte)map.Length;
        for (int i = 0; i < map.Length && i < E820MaxEntries; i++)
        {
            var e = zeroPage.Slice(E820Table + i * 20, 20); // struct boot_e820_entry: addr, size, type
            BinaryPrimitives.WriteUInt64LittleEndian(e, map[i].Base);
            BinaryPrimitives.WriteUInt64LittleEndian(e[8..], map[i].Length);
            BinaryPrimitives.WriteUInt32LittleEndian(e[16..], map[i].Type);
        }
        if (vgaTextConsole)
        {
            // struct screen_info: what the BIOS would report for 80x25 colour text (mode 3), so
            // vgacon can drive the VGA text console.
            zeroPage[0x00] = 0;   // orig_x
            zeroPage[0x01] = 0;   // orig_y
            zeroPage[0x06] = 3;   // orig_video_mode
            zeroPage[0x07] = 80;  // orig_video_cols
            zeroPage[0x0E] = 25;  // orig_video_lines
            zeroPage[0x0F] = 1;   // orig_video_isVGA = VIDEO_TYPE_VGAC
            BinaryPrimitives.WriteUInt16LittleEndian(zeroPage[0x10..], 16); // orig_video_points (font height)
        }
        regions.Add(new(BootParamsAddress, 4096, "boot_params"));
        BootLayout.WriteFlatGdt(ram);
        regions.Add(new(BootLayout.GdtAddress, BootLayout.GdtLimit + 1u, "boot GDT"));

        return new BootPlan
        {
            Format = $"Linux bzImage (boot protocol {version >> 8}.{version & 0xFF:D2})",
            Mode = BootCpuMode.FlatProtected,
            EntryEip = code32Start,
            Esi = BootParamsAddress,
            GdtBase = BootLayout.GdtAddress,
            GdtLimit = BootLayout.GdtLimit,
            CodeSelector = BootLayout.CodeSelector,
            DataSelector = BootLayout.DataSelector,
            Regions = regions,
        };
    }
}
