using System.Buffers.Binary;
using System.Text;
using SecureVmm.Tcb.Memory;

namespace SecureVmm.Tcb.Boot;

/// <summary>A Multiboot module: its bytes and its command line (the spec's module "string").</summary>
public sealed record BootModule(byte[] Data, string CommandLine);

/// <summary>
/// Multiboot specification 0.6.96 loader: finds the Multiboot header in the first 8192 bytes
/// (3.1.1), loads an ELF32 executable by its PT_LOAD program headers or, with flag bit 16, by the
/// header's a.out kludge address fields (3.1.3), places modules page-aligned above the kernel,
/// builds the Multiboot information structure (3.3) with mem_lower/mem_upper, the memory map,
/// command line, modules and boot loader name, and enters in flat 32-bit protected mode with
/// EAX = 0x2BADB002 and EBX = the information address (3.2).
/// </summary>
public static class MultibootLoader
{
    public const uint HeaderMagic = 0x1BADB002;
    public const uint BootloaderMagic = 0x2BADB002;
    private const int HeaderSearchLimit = 8192;
    private const uint FlagPageAlignModules = 1 << 0, FlagMemoryInfo = 1 << 1, FlagVideoMode = 1 << 2, FlagAoutKludge = 1 << 16;
    /// <summary>The boot information area: info structure, memory map, module list, strings.</summary>
    public const uint InfoAreaStart = 0x2000;
    public const uint InfoAreaEnd = 0x10000;
    public const string LoaderName = "SecureVmm";

    // Multiboot information flags (3.3).
    private const uint InfoMemory = 1 << 0, InfoCmdline = 1 << 2, InfoModules = 1 << 3, InfoMemoryMap = 1 << 6, InfoLoaderName = 1 << 9;

    /// <summary>Offset of the Multiboot header, or -1 if there is none.</summary>
    public static int FindHeader(ReadOnlySpan<byte> image)
    {
        int limit = Math.Min(image.Length, HeaderSearchLimit) - 12;
        for (int offset = 0; offset <= limit; offset += 4)
        {
            if (BinaryPrimitives.ReadUInt32LittleEndian(image[offset..]) == HeaderMagic)
            {
                uint flags = BinaryPrimitives.ReadUInt32LittleEndian(image[(offset + 4)..]);
                uint checksum = BinaryPrimitives.ReadUInt32LittleEndian(image[(offset + 8)..]);
                if (unchecked(HeaderMagic + flags + checksum) == 0)
                {
                    return offset;
                }
            }
        }
        return -1;
    }

    public static BootPlan Load(GuestRam ram, ReadOnlySpan<byte> image, string commandLine, IReadOnlyList<BootModule>? modules = null)
    {
        ArgumentNullException.ThrowIfNull(ram);
        commandLine ??= "";
        modules ??= [];
        int header = FindHeader(image);
        if (header < 0)
        {
            int magicAt = FindMagicOnly(image);
            throw magicAt >= 0
                ? new BootImageException(magicAt + 8, "Multiboot header checksum is wrong: magic + flags + checksum must be 0 (mod 2^32)")
                : new BootImageException(0, "no Multiboot header (magic 0x1BADB002, 4-byte aligned) in the first 8192 bytes");
        }
        BootLayout.RequireHighRam(ram, header);
        uint flags = ReadU32(image, header + 4);
        uint unknownRequired = flags & 0xFFFF & ~(FlagPageAlignModules | FlagMemoryInfo | FlagVideoMode);
        if (unknownRequired != 0)
        {
            throw new BootImageException(header + 4, $"Multiboot header flags 0x{flags:X8} require features this loader does not know (bits 0x{unknownRequired:X4}); spec 3.1.2 says to refuse");
        }

        var segments = new List<Segment>();
        uint entry = (flags & FlagAoutKludge) != 0
            ? PlanAoutKludge(image, header, ram, segments)
            : PlanElf(image, ram, segments);

        // Modules go page-aligned after the highest byte the kernel occupies.
        ulong next = BootLayout.AlignUp(segments.Max(s => s.Address + s.MemorySize), 0x1000);
        var modulePlacements = new List<(ulong Address, BootModule Module)>();
        foreach (var module in modules)
        {
            ulong length = (ulong)module.Data.Length;
            if (!ram.Contains(next, length))
            {
                throw new BootImageException(0, $"module '{module.CommandLine}' of {length} bytes at 0x{next:X} does not fit in guest RAM of {ram.Size} bytes");
            }
            modulePlacements.Add((next, module));
            next = BootLayout.AlignUp(next + Math.Max(length, 1), 0x1000);
        }

        CheckInfoFits(commandLine, modules);

        // Everything checked: write guest RAM (fresh guest RAM is zero; BSS is cleared explicitly).
        var regions = new List<LoadedRegion>();
        foreach (var s in segments)
        {
            var target = ram.Slice(s.Address, (int)s.MemorySize);
            image.Slice(s.FileOffset, (int)s.FileSize).CopyTo(target);
            target[(int)s.FileSize..].Clear();
            regions.Add(new(s.Address, s.MemorySize, s.What));
        }
        foreach (var (address, module) in modulePlacements)
        {
            module.Data.CopyTo(ram.Slice(address, module.Data.Length));
            regions.Add(new(address, (ulong)module.Data.Length, $"module '{module.CommandLine}'"));
        }
        uint info = WriteInfo(ram, commandLine, modulePlacements);
        regions.Add(new(InfoAreaStart, InfoAreaEnd - InfoAreaStart, "Multiboot information"));
        BootLayout.WriteFlatGdt(ram);
        regions.Add(new(BootLayout.GdtAddress, BootLayout.GdtLimit + 1u, "boot GDT"));
        return new BootPlan
        {
            Format = (flags & FlagAoutKludge) != 0 ? "Multiboot (a.out kludge)" : "Multiboot ELF32",
            Mode = BootCpuMode.FlatProtected,
            EntryEip = entry,
            Eax = BootloaderMagic,
            Ebx = info,
            GdtBase = BootLayout.GdtAddress,
            GdtLimit = BootLayout.GdtLimit,
            CodeSelector = BootLayout.CodeSelector,
            DataSelector = BootLayout.DataSelector,
            Regions = regions,
        };
    }

    private readonly record struct Segment(int FileOffset, ulong FileSize, ulong Address, ulong MemorySize, string What, long HeaderOffset);

    private static int FindMagicOnly(ReadOnlySpan<byte> image)
    {
        int limit = Math.Min(image.Length, HeaderSearchLimit) - 12;
        for (int offset = 0; offset <= limit; offset += 4)
        {
            if (BinaryPrimitives.ReadUInt32LittleEndian(image[offset..]) == HeaderMagic)
            {
                return offset;
            }
        }
        return -1;
    }

    private static uint ReadU32(ReadOnlySpan<byte> image, int offset) => BinaryPrimitives.ReadUInt32LittleEndian(image[offset..]);

    private static ushort ReadU16(ReadOnlySpan<byte> image, int offset) => BinaryPrimitives.ReadUInt16LittleEndian(image[offset..]);

    /// <summary>Rejects a segment that leaves RAM, touches the low boot areas or the 640 KiB-1 MiB hole, or overlaps another.</summary>
    private static void CheckSegment(GuestRam ram, List<Segment> segments, Segment s)
    {
        if (!ram.Contains(s.Address, s.MemorySize))
        {
            throw new BootImageException(s.HeaderOffset, $"{s.What} at 0x{s.Address:X} of {s.MemorySize} bytes does not fit in guest RAM of {ram.Size} bytes");
        }
        if (BootLayout.Overlaps(s.Address, s.MemorySize, 0, InfoAreaEnd))
        {
            throw new BootImageException(s.HeaderOffset, $"{s.What} at 0x{s.Address:X} overlaps the loader's boot areas below 0x{InfoAreaEnd:X}");
        }
        if (BootLayout.Overlaps(s.Address, s.MemorySize, BootLayout.LowRamEnd, BootLayout.HighRamStart - BootLayout.LowRamEnd))
        {
            throw new BootImageException(s.HeaderOffset, $"{s.What} at 0x{s.Address:X} of {s.MemorySize} bytes overlaps the 640 KiB-1 MiB hole (0x{BootLayout.LowRamEnd:X}-0xFFFFF)");
        }
        foreach (var other in segments)
        {
            if (BootLayout.Overlaps(s.Address, s.MemorySize, other.Address, other.MemorySize))
            {
                throw new BootImageException(s.HeaderOffset, $"{s.What} at 0x{s.Address:X} overlaps {other.What} at 0x{other.Address:X}");
            }
        }
        segments.Add(s);
    }

    private static uint PlanAoutKludge(ReadOnlySpan<byte> image, int header, GuestRam ram, List<Segment> segments)
    {
        if (header + 32 > image.Length)
        {
            throw new BootImageException(header + 12, "Multiboot header is cut short: flag bit 16 needs the address fields at header offsets 12-31");
        }
        uint headerAddr = ReadU32(image, header + 12);
        uint loadAddr = ReadU32(image, header + 16);
        uint loadEndAddr = ReadU32(image, header + 20);
        uint bssEndAddr = ReadU32(image, header + 24);
        uint entryAddr = ReadU32(image, header + 28);
        if (headerAddr < loadAddr || headerAddr - loadAddr > (uint)header)
        {
            throw new BootImageException(header + 16, $"load_addr 0x{loadAddr:X} must be at most header_addr 0x{headerAddr:X} and at most {header} bytes before it (the header is at file offset {header})");
        }
        int fileOffset = header - (int)(headerAddr - loadAddr);
        ulong fileSize;
        if (loadEndAddr == 0)
        {
            fileSize = (ulong)(image.Length - fileOffset); // 0: the text and data run to the end of the file
        }
        else
        {
            if (loadEndAddr < loadAddr)
            {
                throw new BootImageException(header + 20, $"load_end_addr 0x{loadEndAddr:X} is below load_addr 0x{loadAddr:X}");
            }
            fileSize = loadEndAddr - loadAddr;
            if ((ulong)fileOffset + fileSize > (ulong)image.Length)
            {
                throw new BootImageException(header + 20, $"load_end_addr 0x{loadEndAddr:X} asks for {fileSize} bytes from file offset {fileOffset}, past the end of the {image.Length}-byte file");
            }
        }
        ulong memorySize = fileSize;
        if (bssEndAddr != 0)
        {
            if (bssEndAddr < loadAddr + fileSize)
            {
                throw new BootImageException(header + 24, $"bss_end_addr 0x{bssEndAddr:X} is below the end of the loaded text and data (0x{loadAddr + fileSize:X})");
            }
            memorySize = bssEndAddr - loadAddr;
        }
        if (memorySize == 0)
        {
            throw new BootImageException(header + 16, "the a.out kludge fields describe an empty image");
        }
        CheckSegment(ram, segments, new Segment(fileOffset, fileSize, loadAddr, memorySize, "kernel image", header + 16));
        if (entryAddr < loadAddr || entryAddr >= loadAddr + memorySize)
        {
            throw new BootImageException(header + 28, $"entry_addr 0x{entryAddr:X} is outside the loaded image 0x{loadAddr:X}-0x{loadAddr + memorySize - 1:X}");
        }
        return entryAddr;
    }

    // ELF32 (System V ABI, Intel386 supplement): the fields a loader needs.
    private const int EIdentClass = 4, EIdentData = 5, EIdentVersion = 6, EType = 16, EMachine = 18, EEntry = 24,
        EPhoff = 28, EPhentsize = 42, EPhnum = 44, ElfHeaderSize = 52;
    private const uint PtLoad = 1;

    private static uint PlanElf(ReadOnlySpan<byte> image, GuestRam ram, List<Segment> segments)
    {
        if (image.Length < ElfHeaderSize || image[0] != 0x7F || image[1] != (byte)'E' || image[2] != (byte)'L' || image[3] != (byte)'F')
        {
            throw new BootImageException(0, "not an ELF executable (no \\x7FELF magic) and Multiboot flag bit 16 (a.out kludge) is clear");
        }
        if (image[EIdentClass] != 1)
        {
            throw new BootImageException(EIdentClass, $"ELF class {image[EIdentClass]} is not ELFCLASS32 (1): Multiboot v1 kernels are 32-bit");
        }
        if (image[EIdentData] != 1)
        {
            throw new BootImageException(EIdentData, $"ELF data encoding {image[EIdentData]} is not little-endian (1)");
        }
        if (image[EIdentVersion] != 1)
        {
            throw new BootImageException(EIdentVersion, $"ELF version {image[EIdentVersion]} is not EV_CURRENT (1)");
        }
        if (ReadU16(image, EType) != 2)
        {
            throw new BootImageException(EType, $"ELF type {ReadU16(image, EType)} is not ET_EXEC (2)");
        }
        if (ReadU16(image, EMachine) != 3)
        {
            throw new BootImageException(EMachine, $"ELF machine {ReadU16(image, EMachine)} is not EM_386 (3)");
        }
        uint phoff = ReadU32(image, EPhoff);
        int phentsize = ReadU16(image, EPhentsize);
        int phnum = ReadU16(image, EPhnum);
        if (phentsize < 32)
        {
            throw new BootImageException(EPhentsize, $"program header entry size {phentsize} is smaller than Elf32_Phdr (32)");
        }
        if (phnum == 0)
        {
            throw new BootImageException(EPhnum, "the ELF file has no program headers");
        }
        if (phoff > (uint)image.Length || (ulong)phoff + (ulong)phnum * (ulong)phentsize > (ulong)image.Length)
        {
            throw new BootImageException(EPhoff, $"program header table at {phoff} ({phnum} x {phentsize} bytes) runs past the end of the {image.Length}-byte file");
        }
        uint entry = ReadU32(image, EEntry);
        uint? physicalEntry = null;
        for (int i = 0; i < phnum; i++)
        {
            int ph = (int)phoff + i * phentsize;
            if (ReadU32(image, ph) != PtLoad)
            {
                continue;
            }
            uint offset = ReadU32(image, ph + 4);
            uint vaddr = ReadU32(image, ph + 8);
            uint paddr = ReadU32(image, ph + 12);
            uint filesz = ReadU32(image, ph + 16);
            uint memsz = ReadU32(image, ph + 20);
            if (memsz == 0)
            {
                continue;
            }
            if (filesz > memsz)
            {
                throw new BootImageException(ph + 16, $"program header {i}: p_filesz {filesz} is larger than p_memsz {memsz}");
            }
            if ((ulong)offset + filesz > (ulong)image.Length)
            {
                throw new BootImageException(ph + 4, $"program header {i}: p_offset {offset} + p_filesz {filesz} runs past the end of the {image.Length}-byte file");
            }
            CheckSegment(ram, segments, new Segment((int)offset, filesz, paddr, memsz, $"segment {i}", ph + 12));
            // The entry point is a virtual address; translate it if the segment loads elsewhere.
            if (entry >= paddr && entry - paddr < memsz)
            {
                physicalEntry ??= entry;
            }
            else if (entry >= vaddr && entry - vaddr < memsz)
            {
                physicalEntry ??= entry - vaddr + paddr;
            }
        }
        if (segments.Count == 0)
        {
            throw new BootImageException(EPhoff, "the ELF file has no PT_LOAD segment with memory to load");
        }
        return physicalEntry ?? throw new BootImageException(EEntry, $"entry point 0x{entry:X} is not inside any loaded segment");
    }

    /// <summary>Refuses command lines and module strings that would not fit the information area.</summary>
    private static void CheckInfoFits(string commandLine, IReadOnlyList<BootModule> modules)
    {
        ulong need = 88 + 8 + (ulong)Encoding.UTF8.GetByteCount(commandLine) + 8 + (ulong)LoaderName.Length + 8 + 3 * 24 + 8 + (ulong)modules.Count * 16 + 8;
        foreach (var module in modules)
        {
            need += (ulong)Encoding.UTF8.GetByteCount(module.CommandLine) + 8;
        }
        if (need > InfoAreaEnd - InfoAreaStart)
        {
            throw new BootImageException(0, $"the command line and module strings need {need} bytes; the boot information area holds {InfoAreaEnd - InfoAreaStart}");
        }
    }

    /// <summary>Writes the Multiboot information structure and what it points to (spec 3.3). Returns its address.</summary>
    private static uint WriteInfo(GuestRam ram, string commandLine, List<(ulong Address, BootModule Module)> modules)
    {
        uint cursor = InfoAreaStart;
        uint Allocate(int size)
        {
            uint at = cursor;
            cursor = (uint)BootLayout.AlignUp(cursor + (uint)size, 8);
            if (cursor > InfoAreaEnd)
            {
                throw new BootImageException(0, $"the boot information (command lines, {modules.Count} modules) does not fit the {InfoAreaEnd - InfoAreaStart}-byte information area");
            }
            return at;
        }
        Span<byte> At(uint address, int length) => ram.Slice(address, length);
        uint WriteString(string s)
        {
            byte[] bytes = Encoding.UTF8.GetBytes(s);
            uint at = Allocate(bytes.Length + 1);
            bytes.CopyTo(At(at, bytes.Length));
            At(at + (uint)bytes.Length, 1)[0] = 0;
            return at;
        }

        const int InfoSize = 88;
        uint info = Allocate(InfoSize);
        uint cmdline = WriteString(commandLine);
        uint loaderName = WriteString(LoaderName);

        var map = BootLayout.MemoryMap(ram.Size);
        uint mmap = Allocate(map.Length * 24);
        for (int i = 0; i < map.Length; i++)
        {
            var entryBytes = At(mmap + (uint)(i * 24), 24);
            BinaryPrimitives.WriteUInt32LittleEndian(entryBytes, 20); // size of the rest of the entry
            BinaryPrimitives.WriteUInt64LittleEndian(entryBytes[4..], map[i].Base);
            BinaryPrimitives.WriteUInt64LittleEndian(entryBytes[12..], map[i].Length);
            BinaryPrimitives.WriteUInt32LittleEndian(entryBytes[20..], map[i].Type);
        }

        uint modsAddr = 0;
        if (modules.Count > 0)
        {
            modsAddr = Allocate(modules.Count * 16);
            for (int i = 0; i < modules.Count; i++)
            {
                uint stringAt = WriteString(modules[i].Module.CommandLine);
                var m = At(modsAddr + (uint)(i * 16), 16);
                BinaryPrimitives.WriteUInt32LittleEndian(m, (uint)modules[i].Address);
                BinaryPrimitives.WriteUInt32LittleEndian(m[4..], (uint)(modules[i].Address + (ulong)modules[i].Module.Data.Length));
                BinaryPrimitives.WriteUInt32LittleEndian(m[8..], stringAt);
                BinaryPrimitives.WriteUInt32LittleEndian(m[12..], 0);
            }
        }

        var s = At(info, InfoSize);
        s.Clear();
        BinaryPrimitives.WriteUInt32LittleEndian(s, InfoMemory | InfoCmdline | InfoModules | InfoMemoryMap | InfoLoaderName);
        BinaryPrimitives.WriteUInt32LittleEndian(s[4..], BootLayout.LowRamEnd / 1024);                          // mem_lower (KiB)
        BinaryPrimitives.WriteUInt32LittleEndian(s[8..], (uint)((ram.Size - BootLayout.HighRamStart) / 1024));  // mem_upper (KiB above 1 MiB)
        BinaryPrimitives.WriteUInt32LittleEndian(s[16..], cmdline);
        BinaryPrimitives.WriteUInt32LittleEndian(s[20..], (uint)modules.Count);
        BinaryPrimitives.WriteUInt32LittleEndian(s[24..], modsAddr);
        BinaryPrimitives.WriteUInt32LittleEndian(s[44..], (uint)(map.Length * 24));
        BinaryPrimitives.WriteUInt32LittleEndian(s[48..], mmap);
        BinaryPrimitives.WriteUInt32LittleEndian(s[64..], loaderName);
        return info;
    }
}
