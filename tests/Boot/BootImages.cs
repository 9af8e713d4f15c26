using System.Buffers.Binary;

namespace SecureVmm.Tests.Boot;

/// <summary>Builds small, valid boot images byte by byte, so each test can break exactly one field.</summary>
internal static class BootImages
{
    public const uint ElfLoadAddress = 0x100000;
    public const uint ElfEntry = 0x100040;

    /// <summary>
    /// A Multiboot ELF32 executable: ELF header, one PT_LOAD program header at 52, the Multiboot
    /// header at 0x60 (flags 0x3: page-align modules, memory info), code from 0x80, 0x1000 bytes of
    /// file loaded at 1 MiB with 0x2000 bytes in memory (BSS after).
    /// </summary>
    public static byte[] MultibootElf(uint flags = 0x3)
    {
        var image = new byte[0x1000];
        var s = image.AsSpan();
        s[0] = 0x7F; s[1] = (byte)'E'; s[2] = (byte)'L'; s[3] = (byte)'F';
        s[4] = 1; s[5] = 1; s[6] = 1;
        BinaryPrimitives.WriteUInt16LittleEndian(s[16..], 2);   // ET_EXEC
        BinaryPrimitives.WriteUInt16LittleEndian(s[18..], 3);   // EM_386
        BinaryPrimitives.WriteUInt32LittleEndian(s[20..], 1);
        BinaryPrimitives.WriteUInt32LittleEndian(s[24..], ElfEntry);
        BinaryPrimitives.WriteUInt32LittleEndian(s[28..], 52);  // e_phoff
        BinaryPrimitives.WriteUInt16LittleEndian(s[40..], 52);  // e_ehsize
        BinaryPrimitives.WriteUInt16LittleEndian(s[42..], 32);  // e_phentsize
        BinaryPrimitives.WriteUInt16LittleEndian(s[44..], 1);   // e_phnum
        var ph = s[52..];
        BinaryPrimitives.WriteUInt32LittleEndian(ph, 1);        // PT_LOAD
        BinaryPrimitives.WriteUInt32LittleEndian(ph[4..], 0);   // p_offset
        BinaryPrimitives.WriteUInt32LittleEndian(ph[8..], ElfLoadAddress);
        BinaryPrimitives.WriteUInt32LittleEndian(ph[12..], ElfLoadAddress);
        BinaryPrimitives.WriteUInt32LittleEndian(ph[16..], 0x1000);
        BinaryPrimitives.WriteUInt32LittleEndian(ph[20..], 0x2000);
        BinaryPrimitives.WriteUInt32LittleEndian(ph[24..], 5);
        WriteMultibootHeader(s[0x60..], flags);
        s[0x80] = 0xF4; // hlt
        return image;
    }

    public static void WriteMultibootHeader(Span<byte> at, uint flags)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(at, 0x1BADB002);
        BinaryPrimitives.WriteUInt32LittleEndian(at[4..], flags);
        BinaryPrimitives.WriteUInt32LittleEndian(at[8..], unchecked(0u - 0x1BADB002 - flags));
    }

    /// <summary>An a.out-kludge Multiboot image: header at file offset 0 describing a load at 2 MiB with BSS.</summary>
    public static byte[] MultibootAout()
    {
        var image = new byte[0x800];
        var s = image.AsSpan();
        WriteMultibootHeader(s, 0x0001_0003);
        BinaryPrimitives.WriteUInt32LittleEndian(s[12..], 0x200000); // header_addr
        BinaryPrimitives.WriteUInt32LittleEndian(s[16..], 0x200000); // load_addr
        BinaryPrimitives.WriteUInt32LittleEndian(s[20..], 0x200800); // load_end_addr
        BinaryPrimitives.WriteUInt32LittleEndian(s[24..], 0x201000); // bss_end_addr
        BinaryPrimitives.WriteUInt32LittleEndian(s[28..], 0x200020); // entry_addr
        s[0x20] = 0xF4;
        s[0x7FF] = 0xAB;
        return image;
    }

    /// <summary>
    /// A bzImage-shaped file: boot sector with the setup header (protocol 2.15, setup_sects 4,
    /// LOADED_HIGH, code32_start 1 MiB, initrd_addr_max 0x7FFFFFFF, cmdline_size 2047, init_size
    /// 0x40000), then <paramref name="kernelBytes"/> bytes of "protected-mode kernel".
    /// </summary>
    public static byte[] BzImage(int kernelBytes = 0x4000, ushort version = 0x020F)
    {
        const int setupSects = 4;
        var image = new byte[(setupSects + 1) * 512 + kernelBytes];
        var s = image.AsSpan();
        s[0x1F1] = setupSects;
        BinaryPrimitives.WriteUInt32LittleEndian(s[0x1F4..], (uint)(kernelBytes / 16)); // syssize
        BinaryPrimitives.WriteUInt16LittleEndian(s[0x1FE..], 0xAA55);
        s[0x200] = 0xEB;                       // jmp short
        s[0x201] = 0x6A;                       // header ends at 0x202 + 0x6A = 0x26C
        BinaryPrimitives.WriteUInt32LittleEndian(s[0x202..], 0x53726448); // "HdrS"
        BinaryPrimitives.WriteUInt16LittleEndian(s[0x206..], version);
        s[0x211] = 0x01;                       // LOADED_HIGH
        BinaryPrimitives.WriteUInt32LittleEndian(s[0x214..], 0x100000);
        BinaryPrimitives.WriteUInt32LittleEndian(s[0x22C..], 0x7FFF_FFFF);
        BinaryPrimitives.WriteUInt32LittleEndian(s[0x238..], 2047);
        BinaryPrimitives.WriteUInt32LittleEndian(s[0x260..], 0x40000);
        for (int i = 0; i < kernelBytes; i++)
        {
            image[(setupSects + 1) * 512 + i] = (byte)(i * 7 + 3);
        }
        return image;
    }
}
