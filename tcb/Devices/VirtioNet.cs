using System.Buffers.Binary;
using SecureVmm.Tcb.Memory;

namespace SecureVmm.Tcb.Devices;

/// <summary>Where a NIC's transmitted frames go: the appliance wires it to exactly one network's filter.</summary>
public interface IFramePort
{
    /// <summary>One Ethernet frame (no virtio header) the guest transmitted. Called on the VM's thread.</summary>
    void Transmit(ReadOnlySpan<byte> frame);
}

/// <summary>Why a virtio-net device stopped processing a queue (the guest gave it something malformed).</summary>
public enum VirtioNetError : byte
{
    None = 0,
    RingOutsideRam,
    DescriptorIndexOutOfRange,
    ChainTooLong,
    BufferOutsideRam,
    WrongBufferDirection,
    AvailableIndexJump,
    FrameTooLarge,
}

/// <summary>
/// virtio-net over PCI through the legacy interface (virtio 1.0, 4.1.4.8 "Legacy Interfaces: A Note
/// on PCI Device Layout" and 2.4.2 "Legacy Interfaces: A Note on Virtqueue Layout"; device 0x1000 of
/// vendor 0x1AF4, subsystem 1 = network). BAR0 is a 32-byte I/O window: host features, guest
/// features, queue PFN, queue size, queue select, queue notify, device status, ISR status, then the
/// network configuration (MAC, link status). Queue 0 receives, queue 1 transmits; no control queue,
/// no offloads, no indirect descriptors, no event index: the smallest feature set Linux's driver
/// accepts (VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS).
/// Everything the guest supplies — ring addresses, descriptor indices, buffer addresses and lengths,
/// chain lengths, ring indices — is checked against this VM's RAM and the queue size before use; a
/// malformed request puts the device in a "needs reset" error state (status bit 0x40, virtio 1.0
/// 2.1.1) until the guest resets it. It never faults the VMM and never touches memory outside RAM.
/// </summary>
public sealed class VirtioNet : PciConfigSpace, IPortDevice
{
    public const ushort VendorId = 0x1AF4;
    public const ushort LegacyNetDeviceId = 0x1000;
    public const int QueueSize = 256;
    public const int BarSize = 32;
    /// <summary>struct virtio_net_hdr without VIRTIO_NET_F_MRG_RXBUF (virtio 1.0, 5.1.6).</summary>
    public const int NetHeaderSize = 10;
    /// <summary>Largest frame accepted from the guest: no GSO is offered, so an Ethernet frame with a VLAN tag.</summary>
    public const int MaxFrameSize = 1522;
    public const int HostQueueCapacity = 256;

    // Feature bits (virtio 1.0, 5.1.3).
    public const uint FeatureMac = 1u << 5;
    public const uint FeatureStatus = 1u << 16;
    private const uint HostFeatures = FeatureMac | FeatureStatus;

    // Device status bits (2.1) and the legacy register offsets (4.1.4.8).
    private const byte StatusNeedsReset = 0x40;
    private const int RegHostFeatures = 0x00, RegGuestFeatures = 0x04, RegQueuePfn = 0x08, RegQueueSize = 0x0C,
        RegQueueSelect = 0x0E, RegQueueNotify = 0x10, RegStatus = 0x12, RegIsr = 0x13, RegConfig = 0x14;
    private const ushort DescFlagNext = 1, DescFlagWrite = 2;

    private readonly GuestRam _ram;
    private readonly PhysicalMemoryMap _map;
    private readonly IIrqLines _irq;
    private readonly int _irqLine;
    private readonly ushort _ioBase;
    private readonly byte[] _mac = new byte[6];
    private readonly Queue[] _queues = [new(), new()];
    private readonly byte[] _txFrame = new byte[NetHeaderSize + MaxFrameSize];
    private readonly byte[] _rxHeader = new byte[NetHeaderSize];

    // Host -> guest frames, filled by the backend's thread, drained on the VM's thread.
    private readonly byte[][] _hostFrames = new byte[HostQueueCapacity][];
    private readonly int[] _hostLengths = new int[HostQueueCapacity];
    private readonly Lock _hostLock = new();
    private int _hostHead, _hostCount;

    private uint _guestFeatures;
    private ushort _queueSelect;
    private byte _status;
    private byte _isr;

    public VirtioNet(PhysicalMemoryMap map, IIrqLines irq, ReadOnlySpan<byte> mac, ushort ioBase = 0xC000, int irqLine = 11)
        : base(VendorId, LegacyNetDeviceId, classCode: 0x02, subclass: 0x00, progIf: 0x00, revision: 0x00, interruptPin: 1)
    {
        ArgumentNullException.ThrowIfNull(map);
        ArgumentNullException.ThrowIfNull(irq);
        if (mac.Length != 6)
        {
            throw new ArgumentException("a MAC address is 6 bytes", nameof(mac));
        }
        if (ioBase % BarSize != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(ioBase), "the I/O window must be aligned to its size");
        }
        _map = map;
        _ram = map.Ram;
        _irq = irq;
        _irqLine = irqLine;
        _ioBase = ioBase;
        mac.CopyTo(_mac);
        for (int i = 0; i < _hostFrames.Length; i++)
        {
            _hostFrames[i] = new byte[MaxFrameSize];
        }
        // Subsystem vendor/device: the legacy interface names the device type there (4.1.2.1).
        SetConfigByte(0x2C, VendorId & 0xFF);
        SetConfigByte(0x2D, (byte)(VendorId >> 8));
        SetConfigByte(0x2E, 1);
        SetConfigByte(0x2F, 0);
        DefineBar(0, new PciBar(BarSize, IsIo: true));
        // What firmware would have done: BAR0 at the I/O window, the interrupt line routed.
        WriteConfig(0x10, 4, ioBase | 1u);
        WriteConfig(0x3C, 1, (uint)irqLine);
    }

    /// <summary>The MAC address the device reports in its configuration space.</summary>
    public ReadOnlySpan<byte> Mac => _mac;

    /// <summary>First port of the I/O window the appliance registers on the port bus.</summary>
    public ushort IoBase => _ioBase;

    /// <summary>Why the device stopped, or None.</summary>
    public VirtioNetError Error { get; private set; }

    /// <summary>Frames sent by the guest, frames delivered to it, frames dropped for lack of guest buffers or host queue space.</summary>
    public long TransmittedFrames { get; private set; }
    public long ReceivedFrames { get; private set; }
    public long DroppedFrames { get; private set; }

    /// <summary>The network side (filter + backend); frames go nowhere until it is set.</summary>
    public IFramePort? Network { get; set; }

    /// <summary>Called (on the host thread) after a frame was queued for the guest, to wake a halted VM.</summary>
    public Action? InputSignal { get; set; }

    /// <summary>True once the driver has set DRIVER_OK and the device is not in error.</summary>
    public bool DriverReady => (_status & 0x04) != 0 && Error == VirtioNetError.None;

    // ------------------------------------------------------------------ host side

    /// <summary>
    /// Queues a frame from the network for the guest (any thread). Returns false (and counts a drop)
    /// when the host queue is full or the frame is larger than an Ethernet frame.
    /// </summary>
    public bool Deliver(ReadOnlySpan<byte> frame)
    {
        bool queued = false;
        lock (_hostLock)
        {
            if (frame.Length <= MaxFrameSize && frame.Length > 0 && _hostCount < HostQueueCapacity)
            {
                int slot = (_hostHead + _hostCount) % HostQueueCapacity;
                frame.CopyTo(_hostFrames[slot]);
                _hostLengths[slot] = frame.Length;
                _hostCount++;
                queued = true;
            }
            else
            {
                DroppedFrames++;
            }
        }
        if (queued)
        {
            InputSignal?.Invoke();
        }
        return queued;
    }

    /// <summary>Frames waiting for guest receive buffers.</summary>
    public int PendingHostFrames
    {
        get
        {
            lock (_hostLock)
            {
                return _hostCount;
            }
        }
    }

    /// <summary>Moves queued frames into the guest's receive buffers (VM thread).</summary>
    public void PumpHostInput()
    {
        if (!DriverReady)
        {
            return;
        }
        while (true)
        {
            lock (_hostLock)
            {
                if (_hostCount == 0)
                {
                    return;
                }
                int slot = _hostHead;
                if (!ReceiveOne(_hostFrames[slot].AsSpan(0, _hostLengths[slot])))
                {
                    return; // no guest buffer (or an error): keep the frame for later
                }
                _hostHead = (_hostHead + 1) % HostQueueCapacity;
                _hostCount--;
            }
        }
    }

    // ------------------------------------------------------------------ I/O window (BAR0)

    public uint Read(ushort port, int size)
    {
        uint mask = PortBus.SizeMask(size);
        if (!Decodes(port, size, out int reg))
        {
            return mask;
        }
        uint value = 0;
        for (int i = 0; i < size; i++)
        {
            value |= (uint)ReadByteRegister(reg + i) << (8 * i);
        }
        if (reg <= RegIsr && reg + size > RegIsr)
        {
            // Reading the ISR acknowledges the interrupt and deasserts INTx (4.1.4.5).
            _isr = 0;
            _irq.SetIrq(_irqLine, false);
        }
        return value & mask;
    }

    public void Write(ushort port, int size, uint value)
    {
        if (!Decodes(port, size, out int reg))
        {
            return;
        }
        switch (reg)
        {
            case RegGuestFeatures when size == 4:
                _guestFeatures = value & HostFeatures;
                break;
            case RegQueuePfn when size == 4:
                SetQueuePfn(value);
                break;
            case RegQueueSelect when size == 2:
                _queueSelect = (ushort)value;
                break;
            case RegQueueNotify when size == 2:
                Notify((ushort)value);
                break;
            case RegStatus when size == 1:
                SetStatus((byte)value);
                break;
            default:
                break; // read-only or mis-sized: ignored
        }
    }

    private bool Decodes(ushort port, int size, out int reg)
    {
        reg = port - (int)BarAddress(0);
        return (Command & 1) != 0 && BarAddress(0) == _ioBase && reg >= 0 && reg + size <= BarSize;
    }

    private byte ReadByteRegister(int reg)
    {
        Queue? q = SelectedQueue;
        return reg switch
        {
            >= RegHostFeatures and < RegHostFeatures + 4 => (byte)(HostFeatures >> (8 * (reg - RegHostFeatures))),
            >= RegGuestFeatures and < RegGuestFeatures + 4 => (byte)(_guestFeatures >> (8 * (reg - RegGuestFeatures))),
            >= RegQueuePfn and < RegQueuePfn + 4 => (byte)((q?.Pfn ?? 0) >> (8 * (reg - RegQueuePfn))),
            >= RegQueueSize and < RegQueueSize + 2 => (byte)((q is null ? 0 : QueueSize) >> (8 * (reg - RegQueueSize))),
            >= RegQueueSelect and < RegQueueSelect + 2 => (byte)(_queueSelect >> (8 * (reg - RegQueueSelect))),
            RegStatus => _status,
            RegIsr => _isr,
            >= RegConfig and < RegConfig + 6 => _mac[reg - RegConfig],
            RegConfig + 6 => 1, // link up (VIRTIO_NET_S_LINK_UP)
            _ => 0,
        };
    }

    private Queue? SelectedQueue => _queueSelect < _queues.Length ? _queues[_queueSelect] : null;

    private void SetStatus(byte value)
    {
        if (value == 0)
        {
            // Device reset (2.1 / 4.1.4.8): forget the queues, features, interrupt and error.
            foreach (var q in _queues)
            {
                q.Reset();
            }
            _guestFeatures = 0;
            _isr = 0;
            _status = 0;
            Error = VirtioNetError.None;
            _irq.SetIrq(_irqLine, false);
            return;
        }
        _status = (byte)((value & ~StatusNeedsReset) | (_status & StatusNeedsReset));
    }

    private void SetQueuePfn(uint pfn)
    {
        Queue? q = SelectedQueue;
        if (q is null)
        {
            return;
        }
        if (pfn == 0)
        {
            q.Reset();
            return;
        }
        // Legacy layout: descriptors, then the available ring, then (page aligned) the used ring.
        ulong desc = (ulong)pfn << 12;
        ulong avail = desc + (16 * QueueSize);
        ulong used = (avail + 6 + (2 * QueueSize) + 4095) & ~4095UL;
        ulong end = used + 6 + (8 * QueueSize);
        if (!_ram.Contains(desc, end - desc))
        {
            Fail(VirtioNetError.RingOutsideRam);
            return;
        }
        q.Pfn = pfn;
        q.Desc = desc;
        q.Avail = avail;
        q.Used = used;
        q.LastAvail = 0;
        q.UsedIndex = 0;
    }

    private void Notify(ushort queue)
    {
        if (queue == 1)
        {
            ProcessTransmit();
        }
        else if (queue == 0)
        {
            PumpHostInput(); // new receive buffers may let waiting frames in
        }
    }

    private void Fail(VirtioNetError error)
    {
        if (Error == VirtioNetError.None)
        {
            Error = error;
        }
        _status |= StatusNeedsReset;
        _isr |= 2; // configuration change: the driver should look at the status
        _irq.SetIrq(_irqLine, true);
    }

    // ------------------------------------------------------------------ virtqueues

    private sealed class Queue
    {
        public uint Pfn;
        public ulong Desc, Avail, Used;
        public ushort LastAvail;
        public ushort UsedIndex;

        public bool Ready => Pfn != 0;

        public void Reset()
        {
            Pfn = 0;
            Desc = Avail = Used = 0;
            LastAvail = 0;
            UsedIndex = 0;
        }
    }

    private ushort ReadU16(ulong address) => BinaryPrimitives.ReadUInt16LittleEndian(_ram.Slice(address, 2));

    private void WriteU16(ulong address, ushort value)
    {
        Span<byte> b = stackalloc byte[2];
        BinaryPrimitives.WriteUInt16LittleEndian(b, value);
        _map.WriteRam((uint)address, b);
    }

    /// <summary>The next available descriptor head, or -1 when the ring is empty or malformed.</summary>
    private int NextAvailable(Queue q)
    {
        ushort availIdx = ReadU16(q.Avail + 2);
        ushort pending = (ushort)(availIdx - q.LastAvail);
        if (pending == 0)
        {
            return -1;
        }
        if (pending > QueueSize)
        {
            Fail(VirtioNetError.AvailableIndexJump);
            return -1;
        }
        ushort head = ReadU16(q.Avail + 4 + (2UL * (ulong)(q.LastAvail % QueueSize)));
        if (head >= QueueSize)
        {
            Fail(VirtioNetError.DescriptorIndexOutOfRange);
            return -1;
        }
        q.LastAvail++;
        return head;
    }

    private void PutUsed(Queue q, int head, uint length)
    {
        ulong element = q.Used + 4 + (8UL * (ulong)(q.UsedIndex % QueueSize));
        Span<byte> e = stackalloc byte[8];
        BinaryPrimitives.WriteUInt32LittleEndian(e, (uint)head);
        BinaryPrimitives.WriteUInt32LittleEndian(e[4..], length);
        _map.WriteRam((uint)element, e);
        q.UsedIndex++;
        WriteU16(q.Used + 2, q.UsedIndex);
        // Interrupt unless the driver suppressed it (VRING_AVAIL_F_NO_INTERRUPT, 2.4.7).
        if ((ReadU16(q.Avail) & 1) == 0)
        {
            _isr |= 1;
            _irq.SetIrq(_irqLine, true);
        }
    }

    /// <summary>Reads descriptor <paramref name="index"/>: address, length, flags, next.</summary>
    private (ulong Address, uint Length, ushort Flags, ushort Next) Descriptor(Queue q, int index)
    {
        var d = _ram.Slice(q.Desc + (16UL * (ulong)index), 16);
        return (BinaryPrimitives.ReadUInt64LittleEndian(d), BinaryPrimitives.ReadUInt32LittleEndian(d[8..]),
            BinaryPrimitives.ReadUInt16LittleEndian(d[12..]), BinaryPrimitives.ReadUInt16LittleEndian(d[14..]));
    }

    private void ProcessTransmit()
    {
        Queue q = _queues[1];
        if (!q.Ready || Error != VirtioNetError.None)
        {
            return;
        }
        int head;
        while ((head = NextAvailable(q)) >= 0)
        {
            int length = 0;
            int index = head;
            for (int steps = 0; ; steps++)
            {
                if (steps >= QueueSize)
                {
                    Fail(VirtioNetError.ChainTooLong); // a loop in the chain, or longer than the ring
                    return;
                }
                var (address, len, flags, next) = Descriptor(q, index);
                if ((flags & DescFlagWrite) != 0)
                {
                    Fail(VirtioNetError.WrongBufferDirection);
                    return;
                }
                if (!_ram.Contains(address, len))
                {
                    Fail(VirtioNetError.BufferOutsideRam);
                    return;
                }
                if (length + (long)len > _txFrame.Length)
                {
                    Fail(VirtioNetError.FrameTooLarge);
                    return;
                }
                _ram.Slice(address, (int)len).CopyTo(_txFrame.AsSpan(length));
                length += (int)len;
                if ((flags & DescFlagNext) == 0)
                {
                    break;
                }
                if (next >= QueueSize)
                {
                    Fail(VirtioNetError.DescriptorIndexOutOfRange);
                    return;
                }
                index = next;
            }
            if (length > NetHeaderSize)
            {
                TransmittedFrames++;
                Network?.Transmit(_txFrame.AsSpan(NetHeaderSize, length - NetHeaderSize));
            }
            PutUsed(q, head, 0);
        }
    }

    /// <summary>Writes one frame into the next receive chain. False when no buffer is available (or on error).</summary>
    private bool ReceiveOne(ReadOnlySpan<byte> frame)
    {
        Queue q = _queues[0];
        if (!q.Ready || Error != VirtioNetError.None)
        {
            return false;
        }
        int head = NextAvailable(q);
        if (head < 0)
        {
            return false;
        }
        // virtio_net_hdr: all zero (no checksum offload, no GSO), then the frame.
        int total = NetHeaderSize + frame.Length;
        int written = 0;
        int index = head;
        for (int steps = 0; written < total; steps++)
        {
            if (steps >= QueueSize)
            {
                Fail(VirtioNetError.ChainTooLong);
                return false;
            }
            var (address, len, flags, next) = Descriptor(q, index);
            if ((flags & DescFlagWrite) == 0)
            {
                Fail(VirtioNetError.WrongBufferDirection);
                return false;
            }
            if (!_ram.Contains(address, len))
            {
                Fail(VirtioNetError.BufferOutsideRam);
                return false;
            }
            int chunk = (int)Math.Min(len, (uint)(total - written));
            for (int i = 0; i < chunk;)
            {
                // Copy from the header or the frame, whichever this stretch of the chain covers.
                int at = written + i;
                ReadOnlySpan<byte> source = at < NetHeaderSize ? _rxHeader.AsSpan(at) : frame[(at - NetHeaderSize)..];
                int n = Math.Min(chunk - i, source.Length);
                _map.WriteRam((uint)(address + (uint)i), source[..n]);
                i += n;
            }
            written += chunk;
            if (written >= total)
            {
                break;
            }
            if ((flags & DescFlagNext) == 0)
            {
                break; // the chain is shorter than the frame: deliver what fits (the driver sees the length)
            }
            if (next >= QueueSize)
            {
                Fail(VirtioNetError.DescriptorIndexOutOfRange);
                return false;
            }
            index = next;
        }
        ReceivedFrames++;
        PutUsed(q, head, (uint)written);
        return true;
    }
}
