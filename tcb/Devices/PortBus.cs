namespace SecureVmm.Tcb.Devices;

/// <summary>
/// The VM's I/O port space: a 64 Ki-entry table that names, for each port, the device that decodes
/// it. Ports no device claims read as all-ones and ignore writes, as an ISA bus with nothing
/// driving it does; the machine still records every access as an exit.
/// </summary>
public sealed class PortBus
{
    private readonly byte[] _ownerByPort = new byte[65536]; // 0 = unclaimed, else index+1 into _devices
    private readonly List<IPortDevice> _devices = [];

    /// <summary>Claims ports [first, first+count) for <paramref name="device"/>. Overlaps are configuration errors.</summary>
    public void Register(IPortDevice device, ushort first, int count = 1)
    {
        ArgumentNullException.ThrowIfNull(device);
        if (count < 1 || first + count > 65536)
        {
            throw new ArgumentOutOfRangeException(nameof(count), $"port range 0x{first:X}+{count} is outside the I/O space");
        }
        for (int port = first; port < first + count; port++)
        {
            if (_ownerByPort[port] != 0)
            {
                throw new InvalidOperationException($"port 0x{port:X4} is already claimed by {_devices[_ownerByPort[port] - 1].GetType().Name}");
            }
        }
        int index = _devices.IndexOf(device);
        if (index < 0)
        {
            if (_devices.Count == 255)
            {
                throw new InvalidOperationException("too many port devices (255 at most)");
            }
            _devices.Add(device);
            index = _devices.Count - 1;
        }
        for (int port = first; port < first + count; port++)
        {
            _ownerByPort[port] = (byte)(index + 1);
        }
    }

    /// <summary>The device that decodes <paramref name="port"/>, or null.</summary>
    public IPortDevice? DeviceAt(ushort port)
    {
        int owner = _ownerByPort[port];
        return owner == 0 ? null : _devices[owner - 1];
    }

    /// <summary>An IN of <paramref name="size"/> bytes (1, 2 or 4); unclaimed ports read all-ones.</summary>
    public uint Read(ushort port, int size)
    {
        uint mask = SizeMask(size);
        int owner = _ownerByPort[port];
        return owner == 0 ? mask : _devices[owner - 1].Read(port, size) & mask;
    }

    /// <summary>An OUT of <paramref name="size"/> bytes; unclaimed ports ignore it.</summary>
    public void Write(ushort port, int size, uint value)
    {
        int owner = _ownerByPort[port];
        if (owner != 0)
        {
            _devices[owner - 1].Write(port, size, value & SizeMask(size));
        }
    }

    /// <summary>All-ones of an access size; sizes other than 1 and 2 are treated as 4.</summary>
    public static uint SizeMask(int size) => size switch { 1 => 0xFFu, 2 => 0xFFFFu, _ => 0xFFFF_FFFFu };
}

/// <summary>
/// The VM's MMIO space outside RAM: a short list of claimed ranges (VGA text buffer, later the
/// virtio BARs). Unclaimed addresses read all-ones and ignore writes.
/// </summary>
public sealed class MmioBus
{
    private MmioRange[] _ranges = [];

    private readonly record struct MmioRange(ulong Base, ulong Length, IMmioDevice Device);

    /// <summary>Claims [base, base+length) for <paramref name="device"/>. Overlaps are configuration errors.</summary>
    public void Register(IMmioDevice device, ulong baseAddress, ulong length)
    {
        ArgumentNullException.ThrowIfNull(device);
        if (length == 0 || baseAddress + length < baseAddress)
        {
            throw new ArgumentOutOfRangeException(nameof(length), $"MMIO range 0x{baseAddress:X}+0x{length:X} is empty or wraps");
        }
        foreach (var r in _ranges)
        {
            if (baseAddress < r.Base + r.Length && r.Base < baseAddress + length)
            {
                throw new InvalidOperationException($"MMIO range 0x{baseAddress:X}+0x{length:X} overlaps {r.Device.GetType().Name} at 0x{r.Base:X}");
            }
        }
        var grown = new MmioRange[_ranges.Length + 1];
        _ranges.CopyTo(grown, 0);
        grown[^1] = new MmioRange(baseAddress, length, device);
        _ranges = grown;
    }

    /// <summary>A read of <paramref name="size"/> bytes (1, 2, 4 or 8); unclaimed or straddling accesses read all-ones.</summary>
    public ulong Read(ulong address, int size)
    {
        ulong mask = SizeMask(size);
        foreach (var r in _ranges)
        {
            if (address - r.Base < r.Length)
            {
                return address - r.Base <= r.Length - (ulong)size ? r.Device.Read(address - r.Base, size) & mask : mask;
            }
        }
        return mask;
    }

    /// <summary>A write of <paramref name="size"/> bytes; unclaimed or straddling accesses are ignored.</summary>
    public void Write(ulong address, int size, ulong value)
    {
        foreach (var r in _ranges)
        {
            if (address - r.Base < r.Length)
            {
                if (address - r.Base <= r.Length - (ulong)size)
                {
                    r.Device.Write(address - r.Base, size, value & SizeMask(size));
                }
                return;
            }
        }
    }

    /// <summary>All-ones of an access size (1, 2, 4, otherwise 8).</summary>
    public static ulong SizeMask(int size) => size switch { 1 => 0xFFul, 2 => 0xFFFFul, 4 => 0xFFFF_FFFFul, _ => ulong.MaxValue };
}
