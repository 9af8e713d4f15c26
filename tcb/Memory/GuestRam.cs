namespace SecureVmm.Tcb.Memory;

/// <summary>
/// One VM's RAM: a single host allocation, zeroed at creation and scrubbed on disposal.
/// All access is through spans bounded by <see cref="Size"/>, so no guest-controlled value can
/// index outside this VM's own memory.
/// </summary>
public sealed class GuestRam : IDisposable
{
    private byte[] _bytes;

    /// <summary>Largest RAM a VM may have: one host array, below the 32-bit MMIO hole.</summary>
    public const long MaxSize = 2047L * 1024 * 1024;

    public GuestRam(long size)
    {
        if (size <= 0 || size > MaxSize || size % 4096 != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(size), size,
                $"guest RAM must be a positive multiple of 4096 bytes and at most {MaxSize} bytes");
        }
        _bytes = GC.AllocateArray<byte>((int)Math.Min(size, Array.MaxLength), pinned: false);
        if (_bytes.LongLength != size)
        {
            throw new ArgumentOutOfRangeException(nameof(size), size, "guest RAM larger than one host array");
        }
    }

    /// <summary>Size of guest RAM in bytes.</summary>
    public long Size => _bytes.LongLength;

    /// <summary>True when [address, address+length) lies entirely inside RAM.</summary>
    public bool Contains(ulong address, ulong length) =>
        length <= (ulong)_bytes.LongLength && address <= (ulong)_bytes.LongLength - length;

    /// <summary>A bounded view of guest RAM; throws if the range is not entirely inside RAM.</summary>
    public Span<byte> Slice(ulong address, int length)
    {
        if (length < 0 || !Contains(address, (ulong)length))
        {
            throw new ArgumentOutOfRangeException(nameof(address),
                $"range 0x{address:X}+{length} is outside guest RAM of {Size} bytes");
        }
        return _bytes.AsSpan((int)address, length);
    }

    /// <summary>All of guest RAM.</summary>
    public Span<byte> Span => _bytes;

    /// <summary>
    /// The backing array, for the CPU's soft-TLB fast path inside the TCB. Every index the CPU
    /// forms is a page base found by the paging walker plus an in-page offset, both checked
    /// against <see cref="Size"/> when the TLB entry is filled; array bounds checks remain.
    /// </summary>
    internal byte[] Bytes => _bytes;

    /// <summary>Scrubs the contents so no guest data outlives the VM.</summary>
    public void Dispose()
    {
        Array.Clear(_bytes);
        _bytes = [];
    }
}
