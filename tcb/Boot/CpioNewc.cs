using System.Globalization;
using System.Text;

namespace SecureVmm.Tcb.Boot;

/// <summary>File types of a cpio entry (the S_IFMT bits of its mode, POSIX sys/stat.h).</summary>
public enum CpioEntryType : uint
{
    Directory = 0x4000,
    CharDevice = 0x2000,
    BlockDevice = 0x6000,
    Regular = 0x8000,
    Symlink = 0xA000,
    Fifo = 0x1000,
}

/// <summary>One archive member: path (no leading '/'), type, permission bits, data (file contents or link target), device numbers.</summary>
public sealed record CpioEntry(string Path, CpioEntryType Type, uint Permissions, byte[] Data, uint DevMajor = 0, uint DevMinor = 0)
{
    public uint Mode => (uint)Type | (Permissions & 0xFFF);
}

/// <summary>
/// Writes a cpio archive in the SVR4 "newc" format without CRC (magic 070701), the format the
/// Linux kernel unpacks as an initramfs (Documentation/driver-api/early-userspace/buffer-format.rst):
/// each member is a 110-byte header of thirteen 8-digit hex fields, the NUL-terminated name padded
/// to a multiple of 4, then the data padded to a multiple of 4; the archive ends with the member
/// "TRAILER!!!". Entries keep the order they were added in (parents before children).
/// </summary>
public sealed class CpioNewcWriter
{
    public const string Magic = "070701";
    public const string TrailerName = "TRAILER!!!";
    private readonly List<CpioEntry> _entries = [];
    private readonly HashSet<string> _paths = new(StringComparer.Ordinal);

    /// <summary>Fixed modification time for every member, so builds are reproducible.</summary>
    public uint ModificationTime { get; init; }

    public IReadOnlyList<CpioEntry> Entries => _entries;

    /// <summary>Permission bits written the Unix way: Octal(755) = rwxr-xr-x. Digits above 7 are refused.</summary>
    public static uint Octal(uint digits)
    {
        uint value = 0, scale = 1;
        for (; digits != 0; digits /= 10, scale *= 8)
        {
            uint digit = digits % 10;
            if (digit > 7)
            {
                throw new ArgumentOutOfRangeException(nameof(digits), "not an octal number");
            }
            value += digit * scale;
        }
        return value;
    }

    public CpioNewcWriter AddDirectory(string path, uint? permissions = null) =>
        Add(new CpioEntry(Normalize(path), CpioEntryType.Directory, permissions ?? Octal(755), []));

    public CpioNewcWriter AddFile(string path, byte[] contents, uint? permissions = null) =>
        Add(new CpioEntry(Normalize(path), CpioEntryType.Regular, permissions ?? Octal(644), contents ?? throw new ArgumentNullException(nameof(contents))));

    public CpioNewcWriter AddSymlink(string path, string target) =>
        Add(new CpioEntry(Normalize(path), CpioEntryType.Symlink, Octal(777), Encoding.UTF8.GetBytes(target)));

    public CpioNewcWriter AddCharDevice(string path, uint major, uint minor, uint? permissions = null) =>
        Add(new CpioEntry(Normalize(path), CpioEntryType.CharDevice, permissions ?? Octal(600), [], major, minor));

    public CpioNewcWriter AddBlockDevice(string path, uint major, uint minor, uint? permissions = null) =>
        Add(new CpioEntry(Normalize(path), CpioEntryType.BlockDevice, permissions ?? Octal(600), [], major, minor));

    /// <summary>True if a member with this path was added.</summary>
    public bool Contains(string path) => _paths.Contains(Normalize(path));

    private CpioNewcWriter Add(CpioEntry entry)
    {
        if (entry.Path.Length == 0 || entry.Path == TrailerName)
        {
            throw new ArgumentException($"'{entry.Path}' is not a valid archive path", nameof(entry));
        }
        if (!_paths.Add(entry.Path))
        {
            throw new ArgumentException($"'{entry.Path}' is already in the archive", nameof(entry));
        }
        _entries.Add(entry);
        return this;
    }

    private static string Normalize(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        string p = path.Trim('/');
        if (p.Contains('\0', StringComparison.Ordinal) || p.Split('/').Any(part => part is "" or "." or ".."))
        {
            throw new ArgumentException($"'{path}' is not a clean relative path", nameof(path));
        }
        return p;
    }

    /// <summary>Writes the archive to <paramref name="output"/>.</summary>
    public void WriteTo(Stream output)
    {
        ArgumentNullException.ThrowIfNull(output);
        uint inode = 1;
        foreach (var entry in _entries)
        {
            WriteMember(output, entry.Path, entry.Mode, inode++, entry.Type == CpioEntryType.Directory ? 2u : 1u,
                entry.Data, entry.DevMajor, entry.DevMinor);
        }
        WriteMember(output, TrailerName, 0, 0, 1, [], 0, 0);
    }

    public byte[] ToArray()
    {
        using var ms = new MemoryStream();
        WriteTo(ms);
        return ms.ToArray();
    }

    private void WriteMember(Stream output, string name, uint mode, uint inode, uint links, byte[] data, uint major, uint minor)
    {
        byte[] nameBytes = Encoding.UTF8.GetBytes(name);
        var header = new StringBuilder(110);
        header.Append(Magic);
        foreach (uint field in (ReadOnlySpan<uint>)[inode, mode, 0, 0, links, ModificationTime, (uint)data.Length, 0, 0, major, minor, (uint)nameBytes.Length + 1, 0])
        {
            header.Append(field.ToString("X8", CultureInfo.InvariantCulture));
        }
        output.Write(Encoding.ASCII.GetBytes(header.ToString()));
        output.Write(nameBytes);
        output.WriteByte(0);
        Pad(output, 110 + nameBytes.Length + 1);
        output.Write(data);
        Pad(output, data.Length);
    }

    private static void Pad(Stream output, int length)
    {
        for (int i = length; i % 4 != 0; i++)
        {
            output.WriteByte(0);
        }
    }
}

/// <summary>Reads a newc cpio archive back (tests, inspection). Malformed input raises BootImageException with the offset.</summary>
public static class CpioNewcReader
{
    public static IReadOnlyList<CpioEntry> Read(ReadOnlySpan<byte> archive)
    {
        var entries = new List<CpioEntry>();
        Span<uint> fields = stackalloc uint[13];
        int offset = 0;
        while (true)
        {
            if (offset + 110 > archive.Length)
            {
                throw new BootImageException(offset, "archive ends inside a member header (no TRAILER!!! member)");
            }
            if (Encoding.ASCII.GetString(archive.Slice(offset, 6)) != CpioNewcWriter.Magic)
            {
                throw new BootImageException(offset, "member header magic is not 070701 (newc without CRC)");
            }
            for (int i = 0; i < 13; i++)
            {
                int at = offset + 6 + 8 * i;
                if (!uint.TryParse(archive.Slice(at, 8), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out fields[i]))
                {
                    throw new BootImageException(at, "header field is not 8 hexadecimal digits");
                }
            }
            uint mode = fields[1];
            uint fileSize = fields[6];
            uint nameSize = fields[11];
            int nameAt = offset + 110;
            if (nameSize == 0 || (ulong)nameAt + nameSize > (ulong)archive.Length)
            {
                throw new BootImageException(offset + 6 + 8 * 11, $"name size {nameSize} runs past the end of the archive");
            }
            if (archive[nameAt + (int)nameSize - 1] != 0)
            {
                throw new BootImageException(nameAt + (int)nameSize - 1, "member name is not NUL-terminated");
            }
            string name = Encoding.UTF8.GetString(archive.Slice(nameAt, (int)nameSize - 1));
            int dataAt = Align4(nameAt + (int)nameSize);
            if (name == CpioNewcWriter.TrailerName)
            {
                return entries;
            }
            if ((ulong)dataAt + fileSize > (ulong)archive.Length)
            {
                throw new BootImageException(offset + 6 + 8 * 6, $"file size {fileSize} of '{name}' runs past the end of the archive");
            }
            var type = (CpioEntryType)(mode & 0xF000);
            entries.Add(new CpioEntry(name, type, mode & 0xFFF, archive.Slice(dataAt, (int)fileSize).ToArray(), fields[9], fields[10]));
            offset = Align4(dataAt + (int)fileSize);
        }
    }

    private static int Align4(int value) => (value + 3) & ~3;
}
