using System.Buffers.Binary;

namespace SecureVmm.Tcb.Devices;

/// <summary>
/// One PCI function as configuration mechanism #1 sees it: a 256-byte configuration space
/// (PCI Local Bus Specification 3.0, chapter 6). Offsets are 0-255 and aligned to the size.
/// </summary>
public interface IPciFunction
{
    uint ReadConfig(int offset, int size);
    void WriteConfig(int offset, int size, uint value);
}

/// <summary>A base address register: its size (a power of two) and whether it decodes I/O or memory.</summary>
public readonly record struct PciBar(uint Size, bool IsIo);

/// <summary>
/// A type 0 configuration space with the standard semantics (PCI 3.0, 6.1-6.2): read-only IDs and
/// class code, a writable command register (I/O, memory, bus master, INTx disable), write-1-to-clear
/// status bits, BARs that answer the all-ones sizing write with their size mask (6.2.5.1), and a
/// writable interrupt line with a fixed interrupt pin. Device models derive from it.
/// </summary>
public class PciConfigSpace : IPciFunction
{
    private readonly byte[] _config = new byte[256];
    private readonly byte[] _writable = new byte[256];   // per-byte mask of guest-writable bits
    private readonly byte[] _clearOnWrite = new byte[256]; // per-byte mask of write-1-to-clear bits
    private readonly PciBar[] _bars = new PciBar[6];

    public PciConfigSpace(ushort vendorId, ushort deviceId, byte classCode, byte subclass, byte progIf, byte revision,
        byte headerType = 0, byte interruptPin = 0)
    {
        Set16(0x00, vendorId);
        Set16(0x02, deviceId);
        _config[0x08] = revision;
        _config[0x09] = progIf;
        _config[0x0A] = subclass;
        _config[0x0B] = classCode;
        _config[0x0E] = headerType;
        _config[0x3D] = interruptPin;
        // Command: I/O space, memory space, bus master, SERR#, INTx disable.
        Set16Mask(_writable, 0x04, 0x0547);
        // Status: the error bits are write-1-to-clear.
        Set16Mask(_clearOnWrite, 0x06, 0xF900);
        _writable[0x0C] = 0xFF; // cache line size
        _writable[0x0D] = 0xFF; // latency timer
        _writable[0x3C] = 0xFF; // interrupt line: firmware/OS scratch
    }

    /// <summary>Declares BAR <paramref name="index"/> (0-5). Sizes are powers of two, at least 4 (I/O) or 16 (memory).</summary>
    protected void DefineBar(int index, PciBar bar)
    {
        if ((uint)index >= 6 || bar.Size < (bar.IsIo ? 4u : 16u) || (bar.Size & (bar.Size - 1)) != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(bar), $"BAR {index}: size {bar.Size} is not a valid power of two");
        }
        _bars[index] = bar;
        Set32(0x10 + 4 * index, bar.IsIo ? 1u : 0u);
    }

    /// <summary>Sets a read-only configuration byte (capabilities, subsystem IDs ...).</summary>
    protected void SetConfigByte(int offset, byte value) => _config[offset & 0xFF] = value;

    /// <summary>Makes configuration bits guest-writable (device-specific registers).</summary>
    protected void SetWritable(int offset, byte mask) => _writable[offset & 0xFF] = mask;

    /// <summary>The current base address programmed into BAR <paramref name="index"/> (type bits removed).</summary>
    public uint BarAddress(int index) => Get32(0x10 + 4 * index) & (_bars[index].IsIo ? ~3u : ~15u);

    public ushort Command => (ushort)Get32(0x04);

    public byte InterruptLine => _config[0x3C];

    public byte InterruptPin => _config[0x3D];

    public virtual uint ReadConfig(int offset, int size)
    {
        offset &= 0xFF;
        uint value = 0;
        for (int i = 0; i < size && offset + i < 256; i++)
        {
            value |= (uint)_config[offset + i] << (8 * i);
        }
        return value;
    }

    public virtual void WriteConfig(int offset, int size, uint value)
    {
        offset &= 0xFF;
        for (int i = 0; i < size && offset + i < 256; i++)
        {
            int at = offset + i;
            byte b = (byte)(value >> (8 * i));
            if (at is >= 0x10 and < 0x28)
            {
                WriteBarByte(at, b);
                continue;
            }
            _config[at] = (byte)((_config[at] & ~_writable[at]) | (b & _writable[at]));
            _config[at] &= (byte)~(b & _clearOnWrite[at]);
        }
    }

    private void WriteBarByte(int at, byte b)
    {
        int index = (at - 0x10) / 4;
        var bar = _bars[index];
        if (bar.Size == 0)
        {
            return; // unimplemented BARs are hard-wired to zero
        }
        // Address bits below the size are read-only zero, the type bits read-only: the guest
        // learns the size by writing all-ones and reading back ~(size-1) | type.
        uint mask = ~(bar.Size - 1) & (bar.IsIo ? ~3u : ~15u);
        int shift = 8 * ((at - 0x10) % 4);
        byte writable = (byte)(mask >> shift);
        _config[at] = (byte)((_config[at] & ~writable) | (b & writable));
    }

    private void Set16(int offset, ushort value) => BinaryPrimitives.WriteUInt16LittleEndian(_config.AsSpan(offset), value);

    private void Set32(int offset, uint value) => BinaryPrimitives.WriteUInt32LittleEndian(_config.AsSpan(offset), value);

    private uint Get32(int offset) => BinaryPrimitives.ReadUInt32LittleEndian(_config.AsSpan(offset));

    private static void Set16Mask(byte[] mask, int offset, ushort value) => BinaryPrimitives.WriteUInt16LittleEndian(mask.AsSpan(offset), value);
}

/// <summary>The host bridge at 00:00.0, with the Intel 82441FX (440FX) PMC's IDs (class 06/00, host bridge).</summary>
public sealed class PciHostBridge() : PciConfigSpace(vendorId: 0x8086, deviceId: 0x1237, classCode: 0x06, subclass: 0x00, progIf: 0x00, revision: 0x02);

/// <summary>
/// PCI configuration mechanism #1 (PCI 3.0, 3.2.2.3.2): the CONFIG_ADDRESS register at 0xCF8
/// (dword access only; bit 31 enable, bus 23-16, device 15-11, function 10-8, register 7-2) and
/// CONFIG_DATA at 0xCFC-0xCFF (byte, word or dword). Bus 0 holds the host bridge and only the
/// functions the VM is given; everything else reads all-ones (no device answered) and ignores
/// writes. Port 0xCF9 is the PIIX reset control register: a write with bit 2 set requests a reset,
/// one of the ACPI-less reset paths.
/// </summary>
public sealed class PciHost : IPortDevice
{
    public const ushort ConfigAddressPort = 0xCF8;
    public const ushort ResetControlPort = 0xCF9;
    public const ushort ConfigDataPort = 0xCFC;

    private readonly IPciFunction?[] _functions = new IPciFunction?[256]; // bus 0: device << 3 | function
    private readonly MachineRequests _requests;
    private uint _address;
    private byte _resetControl;

    public PciHost(MachineRequests requests)
    {
        _requests = requests ?? throw new ArgumentNullException(nameof(requests));
        _functions[0] = new PciHostBridge();
    }

    public void Attach(PortBus bus)
    {
        ArgumentNullException.ThrowIfNull(bus);
        bus.Register(this, ConfigAddressPort, 8);
    }

    /// <summary>Places <paramref name="function"/> at 00:<paramref name="device"/>.<paramref name="functionNumber"/>.</summary>
    public void AddFunction(int device, int functionNumber, IPciFunction function)
    {
        ArgumentNullException.ThrowIfNull(function);
        if ((uint)device >= 32 || (uint)functionNumber >= 8)
        {
            throw new ArgumentOutOfRangeException(nameof(device), $"PCI address 00:{device:X2}.{functionNumber} is invalid");
        }
        int slot = device << 3 | functionNumber;
        if (_functions[slot] is not null)
        {
            throw new InvalidOperationException($"PCI address 00:{device:X2}.{functionNumber} is already in use");
        }
        _functions[slot] = function;
    }

    /// <summary>The function addressed by CONFIG_ADDRESS, or null (disabled, another bus, or absent).</summary>
    private IPciFunction? Selected()
    {
        if ((_address & 0x8000_0000) == 0 || ((_address >> 16) & 0xFF) != 0)
        {
            return null;
        }
        return _functions[(_address >> 8) & 0xFF];
    }

    public uint Read(ushort port, int size)
    {
        uint mask = PortBus.SizeMask(size);
        if (port == ConfigAddressPort && size == 4)
        {
            return _address;
        }
        if (port == ResetControlPort && size == 1)
        {
            return _resetControl;
        }
        if (port >= ConfigDataPort)
        {
            int offset = (int)(_address & 0xFC) + (port - ConfigDataPort);
            var function = Selected();
            if (function is null || offset + size > (int)(_address & 0xFC) + 4)
            {
                return mask;
            }
            return function.ReadConfig(offset, size) & mask;
        }
        return mask;
    }

    public void Write(ushort port, int size, uint value)
    {
        if (port == ConfigAddressPort && size == 4)
        {
            _address = value & 0x80FF_FFFC; // reserved bits 30-24 and 1-0 read as zero
            return;
        }
        if (port == ResetControlPort && size == 1)
        {
            // PIIX reset control: bit 1 selects hard reset, bit 2 going to 1 starts it.
            if ((value & 0x04) != 0 && (_resetControl & 0x04) == 0)
            {
                _requests.Request(MachineRequestKind.Reset, 0, "port 0xCF9");
            }
            _resetControl = (byte)(value & 0x02);
            return;
        }
        if (port >= ConfigDataPort)
        {
            int offset = (int)(_address & 0xFC) + (port - ConfigDataPort);
            if (offset + size <= (int)(_address & 0xFC) + 4)
            {
                Selected()?.WriteConfig(offset, size, value);
            }
        }
    }
}
