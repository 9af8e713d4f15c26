using System.Buffers.Binary;
using System.Text;
using FsCheck;
using FsCheck.Fluent;
using SecureVmm.Tcb.Boot;
using SecureVmm.Tcb.Memory;
using Xunit;

namespace SecureVmm.Tests.Boot;

public sealed class LoaderTests
{
    private const long RamSize = 16L * 1024 * 1024;

    private static uint U32(GuestRam ram, ulong address) => BinaryPrimitives.ReadUInt32LittleEndian(ram.Slice(address, 4));

    private static ulong U64(GuestRam ram, ulong address) => BinaryPrimitives.ReadUInt64LittleEndian(ram.Slice(address, 8));

    private static string CString(GuestRam ram, ulong address)
    {
        var bytes = new List<byte>();
        for (ulong a = address; ram.Slice(a, 1)[0] != 0; a++) bytes.Add(ram.Slice(a, 1)[0]);
        return Encoding.UTF8.GetString([.. bytes]);
    }

    private static void AssertFlatGdt(GuestRam ram, BootPlan plan)
    {
        Assert.Equal(BootCpuMode.FlatProtected, plan.Mode);
        Assert.Equal(0x10, plan.CodeSelector);
        Assert.Equal(0x18, plan.DataSelector);
        Assert.Equal(0x00CF_9A00_0000_FFFFul, U64(ram, plan.GdtBase + 0x10));
        Assert.Equal(0x00CF_9200_0000_FFFFul, U64(ram, plan.GdtBase + 0x18));
        Assert.Equal(31, plan.GdtLimit);
    }

    // ---------------- Multiboot ----------------

    [Fact]
    public void Multiboot_elf_loads_segments_and_builds_the_information_structure()
    {
        using var ram = new GuestRam(RamSize);
        ram.Slice(0x101800, 4).Fill(0xCC); // BSS must come out zeroed
        var modules = new[] { new BootModule([1, 2, 3, 4, 5], "initrd.img arg=1"), new BootModule(new byte[0x1800], "second") };
        var plan = MultibootLoader.Load(ram, BootImages.MultibootElf(), "console=ttyS0 quiet", modules);

        Assert.Equal(BootImages.ElfEntry, plan.EntryEip);
        Assert.Equal(0x2BADB002u, plan.Eax);
        AssertFlatGdt(ram, plan);
        Assert.Equal(0xF4, ram.Slice(0x100080, 1)[0]);
        Assert.Equal(0u, U32(ram, 0x101800));

        uint info = plan.Ebx;
        uint flags = U32(ram, info);
        Assert.Equal(0x24Du, flags & 0x24D); // mem, cmdline, mods, mmap, loader name
        Assert.Equal(636u, U32(ram, info + 4));
        Assert.Equal((uint)((RamSize - 0x100000) / 1024), U32(ram, info + 8));
        Assert.Equal("console=ttyS0 quiet", CString(ram, U32(ram, info + 16)));
        Assert.Equal("SecureVmm", CString(ram, U32(ram, info + 64)));

        Assert.Equal(2u, U32(ram, info + 20));
        uint mods = U32(ram, info + 24);
        uint mod0Start = U32(ram, mods), mod0End = U32(ram, mods + 4);
        Assert.Equal(0x102000u, mod0Start); // page-aligned after the kernel's BSS
        Assert.Equal(mod0Start + 5, mod0End);
        Assert.Equal(new byte[] { 1, 2, 3, 4, 5 }, ram.Slice(mod0Start, 5).ToArray());
        Assert.Equal("initrd.img arg=1", CString(ram, U32(ram, mods + 8)));
        Assert.Equal(0x103000u, U32(ram, mods + 16));
        Assert.Equal("second", CString(ram, U32(ram, mods + 24)));

        uint mmapLength = U32(ram, info + 44), mmap = U32(ram, info + 48);
        Assert.Equal(72u, mmapLength);
        Assert.Equal(20u, U32(ram, mmap));
        Assert.Equal(0ul, U64(ram, mmap + 4));
        Assert.Equal(0x9F000ul, U64(ram, mmap + 12));
        Assert.Equal(1u, U32(ram, mmap + 20));
        Assert.Equal(2u, U32(ram, mmap + 24 + 20));
        Assert.Equal(0x100000ul, U64(ram, mmap + 48 + 4));
        Assert.Equal((ulong)RamSize - 0x100000, U64(ram, mmap + 48 + 12));
        Assert.Equal(BootImageKind.Multiboot, BootImageDetector.Detect(BootImages.MultibootElf()));
    }

    [Fact]
    public void Multiboot_aout_kludge_loads_by_the_header_addresses()
    {
        using var ram = new GuestRam(RamSize);
        var plan = MultibootLoader.Load(ram, BootImages.MultibootAout(), "");
        Assert.Equal(0x200020u, plan.EntryEip);
        Assert.Equal(0xF4, ram.Slice(0x200020, 1)[0]);
        Assert.Equal(0xAB, ram.Slice(0x2007FF, 1)[0]);
        Assert.Equal("Multiboot (a.out kludge)", plan.Format);
    }

    [Fact]
    public void Multiboot_elf_entry_given_as_a_virtual_address_is_translated()
    {
        var image = BootImages.MultibootElf();
        BinaryPrimitives.WriteUInt32LittleEndian(image.AsSpan(52 + 8), 0xC0100000); // p_vaddr
        BinaryPrimitives.WriteUInt32LittleEndian(image.AsSpan(24), 0xC0100080);     // e_entry
        using var ram = new GuestRam(RamSize);
        Assert.Equal(0x100080u, MultibootLoader.Load(ram, image, "").EntryEip);
    }

    public static TheoryData<string, long, string> MultibootRejections() => new()
    {
        { "no header", 0, "no Multiboot header" },
        { "bad checksum", 0x68, "checksum" },
        { "unknown required flag", 0x64, "require features" },
        { "not ELF", 0, "not an ELF" },
        { "64-bit ELF", 4, "ELFCLASS32" },
        { "big-endian", 5, "little-endian" },
        { "not executable", 16, "ET_EXEC" },
        { "wrong machine", 18, "EM_386" },
        { "small phentsize", 42, "Elf32_Phdr" },
        { "no program headers", 44, "no program headers" },
        { "phdrs past end", 28, "past the end" },
        { "filesz > memsz", 52 + 16, "p_filesz" },
        { "segment data past end", 52 + 4, "past the end" },
        { "segment outside RAM", 52 + 12, "does not fit in guest RAM" },
        { "segment in VGA hole", 52 + 12, "640 KiB-1 MiB hole" },
        { "segment over boot area", 52 + 12, "boot areas" },
        { "no PT_LOAD", 28, "no PT_LOAD" },
        { "entry outside", 24, "entry point" },
        { "aout load_addr", 16, "load_addr" },
        { "aout load_end", 20, "load_end_addr" },
        { "aout bss_end", 24, "bss_end_addr" },
        { "aout entry", 28, "entry_addr" },
    };

    [Theory]
    [MemberData(nameof(MultibootRejections))]
    public void Multiboot_rejections_name_the_offset(string breakage, long offset, string problem)
    {
        var image = breakage.StartsWith("aout", StringComparison.Ordinal) ? BootImages.MultibootAout() : BootImages.MultibootElf();
        var s = image.AsSpan();
        switch (breakage)
        {
            case "no header": s[0x60..0x6C].Clear(); break;
            case "bad checksum": s[0x68] ^= 1; break;
            case "unknown required flag": BootImages.WriteMultibootHeader(s[0x60..], 0x3 | 0x100); break;
            case "not ELF": s[1] = (byte)'X'; break;
            case "64-bit ELF": s[4] = 2; break;
            case "big-endian": s[5] = 2; break;
            case "not executable": s[16] = 3; break;
            case "wrong machine": s[18] = 0x3E; break;
            case "small phentsize": s[42] = 16; break;
            case "no program headers": s[44] = 0; break;
            case "phdrs past end": BinaryPrimitives.WriteUInt32LittleEndian(s[28..], 0xFF0); break;
            case "filesz > memsz": BinaryPrimitives.WriteUInt32LittleEndian(s[(52 + 16)..], 0x3000); break;
            case "segment data past end": BinaryPrimitives.WriteUInt32LittleEndian(s[(52 + 4)..], 0x800); break;
            case "segment outside RAM": BinaryPrimitives.WriteUInt32LittleEndian(s[(52 + 12)..], 0xFFFFF000); break;
            case "segment in VGA hole": BinaryPrimitives.WriteUInt32LittleEndian(s[(52 + 12)..], 0xB8000); break;
            case "segment over boot area": BinaryPrimitives.WriteUInt32LittleEndian(s[(52 + 12)..], 0x1000); break;
            case "no PT_LOAD": BinaryPrimitives.WriteUInt32LittleEndian(s[52..], 4); break;
            case "entry outside": BinaryPrimitives.WriteUInt32LittleEndian(s[24..], 0x500000); break;
            case "aout load_addr": BinaryPrimitives.WriteUInt32LittleEndian(s[16..], 0x200004); break;
            case "aout load_end": BinaryPrimitives.WriteUInt32LittleEndian(s[20..], 0x300000); break;
            case "aout bss_end": BinaryPrimitives.WriteUInt32LittleEndian(s[24..], 0x200100); break;
            case "aout entry": BinaryPrimitives.WriteUInt32LittleEndian(s[28..], 0x300000); break;
        }
        using var ram = new GuestRam(RamSize);
        var ex = Assert.Throws<BootImageException>(() => MultibootLoader.Load(ram, image, ""));
        Assert.Equal(offset, ex.Offset);
        Assert.Contains(problem, ex.Message, StringComparison.Ordinal);
        Assert.StartsWith($"offset 0x{offset:X}: ", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Multiboot_modules_that_do_not_fit_are_rejected()
    {
        using var ram = new GuestRam(4L * 1024 * 1024);
        var ex = Assert.Throws<BootImageException>(() =>
            MultibootLoader.Load(ram, BootImages.MultibootElf(), "", [new BootModule(new byte[4 * 1024 * 1024], "huge")]));
        Assert.Contains("module 'huge'", ex.Message, StringComparison.Ordinal);
        var ex2 = Assert.Throws<BootImageException>(() => MultibootLoader.Load(ram, BootImages.MultibootElf(), new string('x', 70_000)));
        Assert.Contains("information area", ex2.Message, StringComparison.Ordinal);
    }

    // ---------------- bzImage ----------------

    [Fact]
    public void BzImage_loads_the_kernel_at_1_mib_and_fills_boot_params()
    {
        using var ram = new GuestRam(RamSize);
        byte[] image = BootImages.BzImage();
        byte[] initrd = new byte[10_000];
        initrd[0] = 0x30; initrd[^1] = 0x31;
        var plan = BzImageLoader.Load(ram, image, "console=ttyS0 root=/dev/ram0", initrd);

        Assert.Equal(0x100000u, plan.EntryEip);
        Assert.Equal(BzImageLoader.BootParamsAddress, plan.Esi);
        Assert.Equal(0u, plan.Ebx);
        AssertFlatGdt(ram, plan);
        Assert.Equal(image.AsSpan(5 * 512).ToArray(), ram.Slice(0x100000, image.Length - 5 * 512).ToArray());

        ulong bp = plan.Esi;
        Assert.Equal(0x53726448u, U32(ram, bp + 0x202));                   // setup header copied
        Assert.Equal(0x020F, BinaryPrimitives.ReadUInt16LittleEndian(ram.Slice(bp + 0x206, 2)));
        Assert.Equal(0xFF, ram.Slice(bp + 0x210, 1)[0]);                    // type_of_loader
        Assert.Equal(0x81, ram.Slice(bp + 0x211, 1)[0]);                    // LOADED_HIGH | CAN_USE_HEAP
        Assert.Equal("console=ttyS0 root=/dev/ram0", CString(ram, U32(ram, bp + 0x228)));
        uint initrdAt = U32(ram, bp + 0x218);
        Assert.Equal(10_000u, U32(ram, bp + 0x21C));
        Assert.Equal(0u, initrdAt % 4096);
        Assert.True(initrdAt + 10_000 <= RamSize);
        Assert.True(initrdAt >= 0x100000 + 0x40000); // above init_size
        Assert.Equal(0x30, ram.Slice(initrdAt, 1)[0]);
        Assert.Equal(0x31, ram.Slice(initrdAt + 9_999, 1)[0]);

        Assert.Equal(3, ram.Slice(bp + 0x1E8, 1)[0]);                       // e820_entries
        Assert.Equal(0ul, U64(ram, bp + 0x2D0));
        Assert.Equal(0x9F000ul, U64(ram, bp + 0x2D0 + 8));
        Assert.Equal(1u, U32(ram, bp + 0x2D0 + 16));
        Assert.Equal(2u, U32(ram, bp + 0x2D0 + 20 + 16));
        Assert.Equal(0x100000ul, U64(ram, bp + 0x2D0 + 40));
        Assert.Equal((ulong)RamSize - 0x100000, U64(ram, bp + 0x2D0 + 48));
        Assert.Equal((uint)(RamSize - 0x100000) / 1024, U32(ram, bp + 0x1E0));  // alt_mem_k
        Assert.Equal(1, ram.Slice(bp + 0x0F, 1)[0]);                        // orig_video_isVGA
        Assert.Equal(80, ram.Slice(bp + 0x07, 1)[0]);
        Assert.Equal(BootImageKind.BzImage, BootImageDetector.Detect(image));
    }

    [Fact]
    public void BzImage_initrd_stays_below_initrd_addr_max()
    {
        var image = BootImages.BzImage();
        BinaryPrimitives.WriteUInt32LittleEndian(image.AsSpan(0x22C), 0x7FFFFF); // 8 MiB - 1
        using var ram = new GuestRam(RamSize);
        var plan = BzImageLoader.Load(ram, image, "", new byte[5000]);
        uint initrdAt = U32(ram, plan.Esi + 0x218);
        Assert.True(initrdAt + 5000 <= 0x800000);
        Assert.Equal(0x7FE000u, initrdAt);
    }

    [Fact]
    public void BzImage_initrd_stays_clear_of_init_size_from_the_preferred_run_address()
    {
        var image = BootImages.BzImage();
        BinaryPrimitives.WriteUInt64LittleEndian(image.AsSpan(0x258), 0x1000000); // pref_address 16 MiB, as Debian's
        BinaryPrimitives.WriteUInt32LittleEndian(image.AsSpan(0x260), 0x1000000); // init_size 16 MiB
        using var small = new GuestRam(RamSize);
        Assert.Equal(0x260, Assert.Throws<BootImageException>(() => BzImageLoader.Load(small, image, "", [1])).Offset);
        using var ram = new GuestRam(40L * 1024 * 1024);
        var plan = BzImageLoader.Load(ram, image, "", new byte[0x100000]);
        uint initrdAt = U32(ram, plan.Esi + 0x218);
        Assert.True(initrdAt >= 0x2000000, $"initrd at 0x{initrdAt:X} overlaps the kernel's run area");
        var tooBig = Assert.Throws<BootImageException>(() => BzImageLoader.Load(ram, image, "", new byte[0x801000]));
        Assert.Equal(0x22C, tooBig.Offset);
    }

    public static TheoryData<string, long, string> BzImageRejections() => new()
    {
        { "short", 0x40, "too short" },
        { "boot flag", 0x1FE, "0xAA55" },
        { "no HdrS", 0x202, "HdrS" },
        { "old protocol", 0x206, "older than 2.02" },
        { "zImage", 0x211, "LOADED_HIGH" },
        { "setup_sects", 0x1F1, "setup_sects" },
        { "truncated", 0x1F4, "truncated" },
        { "code32_start low", 0x214, "below 1 MiB" },
        { "init_size too big", 0x260, "init_size" },
        { "cmdline too long", 0x238, "cmdline_size" },
        { "initrd too big", 0x22C, "initrd" },
    };

    [Theory]
    [MemberData(nameof(BzImageRejections))]
    public void BzImage_rejections_name_the_offset(string breakage, long offset, string problem)
    {
        byte[] image = BootImages.BzImage();
        string cmdline = "console=ttyS0";
        byte[] initrd = [];
        var s = image.AsSpan();
        switch (breakage)
        {
            case "short": image = image[..0x40]; break;
            case "boot flag": s[0x1FE] = 0; break;
            case "no HdrS": s[0x202] = (byte)'X'; break;
            case "old protocol": BinaryPrimitives.WriteUInt16LittleEndian(s[0x206..], 0x0201); break;
            case "zImage": s[0x211] = 0; break;
            case "setup_sects": s[0x1F1] = 200; break;
            case "truncated": BinaryPrimitives.WriteUInt32LittleEndian(s[0x1F4..], 0x10000); break;
            case "code32_start low": BinaryPrimitives.WriteUInt32LittleEndian(s[0x214..], 0x10000); break;
            case "init_size too big": BinaryPrimitives.WriteUInt32LittleEndian(s[0x260..], 0x7000000); break;
            case "cmdline too long": cmdline = new string('a', 2048); break;
            case "initrd too big": initrd = new byte[15 * 1024 * 1024]; break;
        }
        using var ram = new GuestRam(RamSize);
        var ex = Assert.Throws<BootImageException>(() => BzImageLoader.Load(ram, image, cmdline, initrd));
        Assert.Equal(offset, ex.Offset);
        Assert.Contains(problem, ex.Message, StringComparison.Ordinal);
    }

    // ---------------- flat ----------------

    [Fact]
    public void Flat_binary_loads_where_asked_in_protected_or_real_mode()
    {
        using var ram = new GuestRam(RamSize);
        var plan = FlatBinaryLoader.Load(ram, [0x90, 0xF4], 0x200000, 0x200001, BootCpuMode.FlatProtected);
        Assert.Equal(0x200001u, plan.EntryEip);
        Assert.Equal(0xF4, ram.Slice(0x200001, 1)[0]);
        AssertFlatGdt(ram, plan);

        var real = FlatBinaryLoader.Load(ram, [0xEA], 0x7C00, 0x7C00, BootCpuMode.Real);
        Assert.Equal(BootCpuMode.Real, real.Mode);
        Assert.Equal(0x0000, real.RealModeCs);
        var high = FlatBinaryLoader.Load(ram, [0xF4], 0xF0000, 0xFFFF0, BootCpuMode.Real);
        Assert.Equal(0xF000, high.RealModeCs);

        Assert.Equal(0x2, Assert.Throws<BootImageException>(() => FlatBinaryLoader.Load(ram, [1, 2], (uint)RamSize - 1, 0, BootCpuMode.FlatProtected)).Offset);
        Assert.Throws<BootImageException>(() => FlatBinaryLoader.Load(ram, [], 0x1000, 0, BootCpuMode.FlatProtected));
        Assert.Throws<BootImageException>(() => FlatBinaryLoader.Load(ram, [1], 0x100000, 0x100000, BootCpuMode.Real));
        Assert.Throws<BootImageException>(() => FlatBinaryLoader.Load(ram, [1], 0x1010, 0x1010, BootCpuMode.FlatProtected));
        Assert.Throws<BootImageException>(() => FlatBinaryLoader.Load(ram, [1], 0x200000, (uint)RamSize, BootCpuMode.FlatProtected));
    }

    // ---------------- hostile input ----------------

    private static Gen<byte[]> MutatedImage(byte[] valid) =>
        from count in Gen.Choose(1, 8)
        from positions in Gen.ArrayOf(Gen.Choose(0, valid.Length - 1), count)
        from values in Gen.ArrayOf(Gen.Choose(0, 255), count)
        from truncate in Gen.Choose(0, valid.Length)
        from doTruncate in Gen.Elements(false, false, true)
        select Mutate(valid, positions, values, doTruncate ? truncate : valid.Length);

    private static byte[] Mutate(byte[] valid, int[] positions, int[] values, int length)
    {
        var copy = (byte[])valid.Clone();
        for (int i = 0; i < positions.Length; i++) copy[positions[i]] = (byte)values[i];
        return copy[..length];
    }

    private static bool OnlyBootImageException(Action load)
    {
        try
        {
            load();
            return true;
        }
        catch (BootImageException)
        {
            return true;
        }
    }

    [Fact]
    public void Random_and_mutated_images_raise_nothing_but_BootImageException()
    {
        using var ram = new GuestRam(4L * 1024 * 1024);
        var randomBytes = Gen.ArrayOf(Gen.Choose(0, 255).Select(b => (byte)b));
        var anyImage = Gen.OneOf(randomBytes, MutatedImage(BootImages.MultibootElf()), MutatedImage(BootImages.MultibootAout()),
            MutatedImage(BootImages.BzImage(0x800)));
        Prop.ForAll(Arb.From(anyImage), image =>
                OnlyBootImageException(() => MultibootLoader.Load(ram, image, "cmd", [new BootModule([1], "m")]))
                && OnlyBootImageException(() => BzImageLoader.Load(ram, image, "cmd", [1, 2, 3]))
                && OnlyBootImageException(() => FlatBinaryLoader.Load(ram, image, 0x100000, 0x100000, BootCpuMode.FlatProtected))
                && OnlyBootImageException(() => CpioNewcReader.Read(image))
                && Enum.IsDefined(BootImageDetector.Detect(image)))
            .Check(Config.QuickThrowOnFailure.WithMaxTest(500));
    }
}
