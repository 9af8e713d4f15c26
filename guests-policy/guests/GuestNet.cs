using System.Net;
using System.Net.Sockets;
using Iced.Intel;
using static Iced.Intel.AssemblerRegisters;

namespace SecureVmm.Policy.Guests;

/// <summary>
/// What a project guest says on its NIC, baked into the image at build time: its own IPv4
/// address, the peer it sends to, and the UDP port it sends from, sends to and listens on.
/// </summary>
public sealed record GuestNetwork(IPAddress Address, IPAddress Peer, ushort Port)
{
    /// <summary>The SECRET kiosk's network (the demo policy's defaults).</summary>
    public static GuestNetwork KioskDefault { get; } = new(IPAddress.Parse("10.1.0.10"), IPAddress.Parse("10.1.0.1"), 7000);

    /// <summary>The UNCLASSIFIED interactive guest's network (the demo policy's defaults).</summary>
    public static GuestNetwork InteractiveDefault { get; } = new(IPAddress.Parse("10.2.0.10"), IPAddress.Parse("10.2.0.1"), 7000);

    /// <summary>Throws <see cref="ArgumentException"/> naming the field unless both addresses are IPv4.</summary>
    public void Validate()
    {
        _ = AddressDword;
        _ = PeerDword;
    }

    /// <summary>The address as the little-endian dword a guest load of its four network-order bytes yields.</summary>
    internal uint AddressDword => Dword(Address, nameof(Address));

    internal uint PeerDword => Dword(Peer, nameof(Peer));

    /// <summary>The port as the little-endian word a guest load of its two network-order bytes yields.</summary>
    internal ushort PortWord => (ushort)((Port >> 8) | ((Port & 0xFF) << 8));

    private static uint Dword(IPAddress address, string field)
    {
        if (address is null || address.AddressFamily != AddressFamily.InterNetwork)
        {
            throw new ArgumentException($"GuestNetwork.{field}: '{address}' is not an IPv4 address", field);
        }
        byte[] b = address.GetAddressBytes();
        return b[0] | ((uint)b[1] << 8) | ((uint)b[2] << 16) | ((uint)b[3] << 24);
    }
}

/// <summary>
/// The project guests' network stack, emitted into a guest with <see cref="GuestBuilder"/>:
/// a legacy virtio-net driver and just enough Ethernet, ARP, IPv4 and UDP to send and receive
/// datagrams.
/// <para>
/// Driver (virtio 1.0, 4.1.5 "PCI-specific Initialization And Device Operation" through the legacy
/// interface, 4.1.4.8 register layout, 2.4.2 legacy virtqueue layout): the device is found by scanning
/// PCI bus 0 through configuration mechanism #1 for vendor 0x1AF4 / device 0x1000; BAR0 (an I/O BAR)
/// and the interrupt line come from its configuration space, nothing is assumed. Initialisation follows
/// 3.1.1 (legacy variant, 3.1.2): reset, ACKNOWLEDGE, DRIVER, features (only VIRTIO_NET_F_MAC is
/// accepted), queues 0 (receive) and 1 (transmit) given by page frame number, receive buffers posted,
/// DRIVER_OK, then the MAC read from the device configuration. Without VIRTIO_F_ANY_LAYOUT the
/// 10-byte virtio_net_hdr sits in its own descriptor on both queues (5.1.6.6, legacy framing), so every
/// buffer is a two-descriptor chain: header, then frame.
/// </para>
/// <para>
/// Interrupts: the handler only reads the ISR register (which acknowledges and deasserts INTx, 4.1.4.5)
/// and sends EOI; the used rings are drained by <c>net_poll</c> from the guest's main loop, so no
/// network code runs inside an interrupt. Transmit completions do not interrupt
/// (VRING_AVAIL_F_NO_INTERRUPT, 2.4.7); used transmit buffers are reclaimed on the next send.
/// </para>
/// <para>
/// Frames sent: Ethernet II to ff:ff:ff:ff:ff:ff (no ARP cache is kept) from the device's MAC, IPv4
/// (RFC 791; IHL 5, DF, TTL 64, identification counting from 0, header checksum per RFC 1071), UDP
/// (RFC 768) from and to <see cref="GuestNetwork.Port"/> with its checksum over the pseudo-header.
/// ARP requests for the guest's own address are answered (RFC 826). Frames received are checked field
/// by field — destination MAC, EtherType, IPv4 version, IHL, lengths, fragments, protocol, destination
/// address, header checksum, UDP port, length and (when non-zero) checksum — and anything that does not
/// fit is ignored.
/// </para>
/// Subroutines (all preserve every register except where noted): net_init (called once with
/// interrupts off), net_poll (drain the receive ring; calls the guest's <c>net_on_udp</c> with
/// ESI = payload, ECX = length for each datagram to the port), net_send_udp (ESI = payload,
/// ECX = length), net_transmit (ESI = frame, ECX = length; CF set when dropped).
/// </summary>
public sealed class GuestNet
{
    public const ushort VirtioVendor = 0x1AF4;
    public const ushort VirtioNetLegacyDevice = 0x1000;
    public const int NetHeaderSize = 10;
    public const int RxBuffers = 16;
    public const int TxBuffers = 8;
    public const int BufferSize = 1536;
    /// <summary>Largest frame the guest sends or accepts: 1500 bytes of payload, Ethernet header, an 802.1Q tag.</summary>
    public const int MaxFrame = 1518;
    /// <summary>Largest UDP payload the guest sends (longer payloads are cut).</summary>
    public const int MaxUdpPayload = 1024;
    /// <summary>Headers in front of a UDP payload: Ethernet 14, IPv4 20, UDP 8.</summary>
    public const int UdpHeaders = 42;
    /// <summary>Largest legacy queue the ring memory is sized for (256 entries need three pages, 2.4.2).</summary>
    public const int MaxQueueSize = 256;
    private const uint RingBytes = 3 * 4096;
    /// <summary>Frames one net_poll call handles at most (the rest wait for the next call).</summary>
    public const int PollBudget = 2 * RxBuffers;

    // Legacy register offsets in BAR0 (virtio 1.0, 4.1.4.8) and status bits (2.1).
    private const int RegHostFeatures = 0x00, RegGuestFeatures = 0x04, RegQueuePfn = 0x08, RegQueueSize = 0x0C,
        RegQueueSelect = 0x0E, RegQueueNotify = 0x10, RegStatus = 0x12, RegIsr = 0x13, RegConfig = 0x14;
    private const byte StatusAcknowledge = 1, StatusDriver = 2, StatusDriverOk = 4, StatusFailed = 0x80, StatusNeedsReset = 0x40;
    private const uint FeatureMac = 1u << 5;
    private const ushort DescNext = 1, DescWrite = 2;

    private readonly GuestBuilder _g;
    private readonly GuestNetwork _net;
    private readonly uint _idt;

    // Driver state (bss, zero at load).
    private readonly uint _ready, _io, _irqLine, _isr, _mac, _rxMask, _txMask, _rxAvail, _rxUsed, _txAvail, _txUsed,
        _rxAvailIdx, _rxLastUsed, _txAvailIdx, _txLastUsed, _txBusy, _txNextSlot, _framesSent, _txDropped, _ipId,
        _reposted;
    private readonly uint _rxRing, _txRing, _rxHeaders, _rxData, _txHeaders, _txData, _staging;

    /// <summary>Allocates the stack's memory in the guest being built; <paramref name="idt"/> is what
    /// <see cref="GuestRuntime.Prologue"/> returned.</summary>
    public GuestNet(GuestBuilder g, GuestNetwork network, uint idt)
    {
        ArgumentNullException.ThrowIfNull(g);
        ArgumentNullException.ThrowIfNull(network);
        _g = g;
        _net = network;
        _idt = idt;
        network.Validate();
        _ready = g.Bss(4, 4);
        _io = g.Bss(4, 4);
        _irqLine = g.Bss(4, 4);
        _isr = g.Bss(4, 4);
        _mac = g.Bss(8, 4);
        _rxMask = g.Bss(4, 4);
        _txMask = g.Bss(4, 4);
        _rxAvail = g.Bss(4, 4);
        _rxUsed = g.Bss(4, 4);
        _txAvail = g.Bss(4, 4);
        _txUsed = g.Bss(4, 4);
        _rxAvailIdx = g.Bss(4, 4);
        _rxLastUsed = g.Bss(4, 4);
        _txAvailIdx = g.Bss(4, 4);
        _txLastUsed = g.Bss(4, 4);
        _txBusy = g.Bss(TxBuffers, 4);
        _txNextSlot = g.Bss(4, 4);
        _framesSent = g.Bss(4, 4);
        _txDropped = g.Bss(4, 4);
        _ipId = g.Bss(4, 4);
        _reposted = g.Bss(4, 4);
        _rxRing = g.Bss(RingBytes, 4096);
        _txRing = g.Bss(RingBytes, 4096);
        _rxHeaders = g.Bss(RxBuffers * 16, 16);
        _rxData = g.Bss(RxBuffers * BufferSize, 16);
        _txHeaders = g.Bss(TxBuffers * 16, 16);
        _txData = g.Bss(TxBuffers * BufferSize, 16);
        _staging = g.Bss(BufferSize, 16);
        PayloadScratch = g.Bss(BufferSize, 16);
    }

    /// <summary>Guest address of the dword that is non-zero once the driver is up.</summary>
    public uint ReadyFlag => _ready;

    /// <summary>Guest address of the dword counting frames handed to the device.</summary>
    public uint FramesSentCounter => _framesSent;

    /// <summary>Guest address of a <see cref="BufferSize"/>-byte scratch buffer guests may use to build payloads
    /// (free again once net_send_udp has copied the payload).</summary>
    public uint PayloadScratch { get; }

    /// <summary>Emits a call to net_init (interrupts must be off).</summary>
    public void EmitInit() => _g.Call("net_init");

    /// <summary>Emits every subroutine; call once, next to <see cref="GuestRuntime.EmitLibrary"/>.</summary>
    public void EmitLibrary()
    {
        EmitInitRoutine();
        EmitIrqHandler();
        EmitPoll();
        EmitReceiveFrame();
        EmitSendUdp();
        EmitTransmit();
        EmitChecksum();
        EmitFormatting();
    }

    // ------------------------------------------------------------------ helpers

    private Assembler A => _g.A;

    private static string Routine(string name) => "net_" + name;

    /// <summary>DX = BAR0 + <paramref name="reg"/>. Clobbers EDX.</summary>
    private void IoPort(int reg)
    {
        A.mov(edx, __dword_ptr[_io]);
        if (reg != 0)
        {
            A.add(edx, reg);
        }
    }

    /// <summary>EAX = configuration dword at <paramref name="offset"/> of bus 0 function EBX (device &lt;&lt; 3 | function),
    /// through CONFIG_ADDRESS / CONFIG_DATA (PCI 3.0, 3.2.2.3.2). Clobbers EAX, EDX.</summary>
    private void PciSelect(int offset)
    {
        A.mov(eax, ebx);
        A.shl(eax, 8);
        A.or(eax, unchecked((int)(0x8000_0000u | (uint)offset)));
        A.mov(dx, 0xCF8);
        A.@out(dx, eax);
        A.mov(dx, 0xCFC);
    }

    private void PciRead(int offset)
    {
        PciSelect(offset);
        A.@in(eax, dx);
    }

    private void SetStatus(byte status)
    {
        IoPort(RegStatus);
        A.mov(al, status);
        A.@out(dx, al);
    }

    // ------------------------------------------------------------------ initialisation

    private void EmitInitRoutine()
    {
        Assembler a = A;
        Label found = a.CreateLabel(), scan = a.CreateLabel(), fail = a.CreateLabel(), noIrq = a.CreateLabel(),
            slave = a.CreateLabel(), irqDone = a.CreateLabel(), done = a.CreateLabel();

        _g.Mark(Routine("init"));
        a.pushad();

        // Scan every device/function of bus 0 for the legacy virtio network device.
        a.xor(ebx, ebx);
        a.Label(ref scan);
        PciRead(0x00);
        a.cmp(eax, (int)(((uint)VirtioNetLegacyDevice << 16) | VirtioVendor));
        a.je(found);
        a.inc(ebx);
        a.cmp(ebx, 256);
        a.jb(scan);
        GuestRuntime.Print(_g, "net: no virtio-net device\n");
        a.jmp(done);

        a.Label(ref found);
        // BAR0 must be an I/O BAR (bit 0 set; PCI 3.0, 6.2.5.1) that firmware or the VMM has placed.
        PciRead(0x10);
        a.test(al, 1);
        Label ioBar = a.CreateLabel();
        a.jnz(ioBar);
        GuestRuntime.Print(_g, "net: virtio-net BAR0 is not an I/O BAR\n");
        a.jmp(done);
        a.Label(ref ioBar);
        a.and(eax, 0xFFFC);
        Label placed = a.CreateLabel();
        a.jnz(placed);
        GuestRuntime.Print(_g, "net: virtio-net BAR0 is not assigned\n");
        a.jmp(done);
        a.Label(ref placed);
        a.mov(__dword_ptr[_io], eax);
        // Interrupt line (configuration byte 0x3C, set by firmware; 0xFF = not connected).
        PciRead(0x3C);
        a.movzx(eax, al);
        a.mov(__dword_ptr[_irqLine], eax);
        // Command register: I/O space and bus master on, as any driver does before touching the BAR.
        PciSelect(0x04);
        a.@in(ax, dx);
        a.or(ax, 0x0005);
        a.@out(dx, ax);

        // 3.1.1: reset, ACKNOWLEDGE, DRIVER.
        SetStatus(0);
        SetStatus(StatusAcknowledge);
        SetStatus(StatusAcknowledge | StatusDriver);
        // Features: the MAC in the configuration space and nothing else (no offloads, no merged buffers,
        // so the header is the 10-byte struct virtio_net_hdr, 5.1.6).
        IoPort(RegHostFeatures);
        a.@in(eax, dx);
        a.test(eax, (int)FeatureMac);
        Label hasMac = a.CreateLabel();
        a.jnz(hasMac);
        GuestRuntime.Print(_g, "net: virtio-net device offers no MAC address\n");
        a.jmp(fail);
        a.Label(ref hasMac);
        IoPort(RegGuestFeatures);
        a.mov(eax, FeatureMac);
        a.@out(dx, eax);

        // Queues: 0 receives, 1 transmits (5.1.2).
        EmitQueueSetup(0, _rxRing, _rxMask, _rxAvail, _rxUsed, fail);
        EmitQueueSetup(1, _txRing, _txMask, _txAvail, _txUsed, fail);

        // Receive buffers: chain i = descriptors 2i (header) -> 2i+1 (frame), both device-writable.
        for (int i = 0; i < RxBuffers; i++)
        {
            uint d = _rxRing + (uint)(32 * i);
            WriteDescriptor(d, _rxHeaders + (uint)(16 * i), NetHeaderSize, DescWrite | DescNext, (ushort)((2 * i) + 1));
            WriteDescriptor(d + 16, _rxData + (uint)(BufferSize * i), BufferSize, DescWrite, 0);
        }
        a.mov(esi, __dword_ptr[_rxAvail]);
        for (int i = 0; i < RxBuffers; i++)
        {
            a.mov(__word_ptr[esi + 4 + (2 * i)], 2 * i);
        }
        a.mov(__word_ptr[esi + 2], RxBuffers);
        a.mov(__dword_ptr[_rxAvailIdx], RxBuffers);
        // Transmit buffers: chain i = 2i (header, always zero: no offload requested) -> 2i+1 (frame, length set per send).
        for (int i = 0; i < TxBuffers; i++)
        {
            uint d = _txRing + (uint)(32 * i);
            WriteDescriptor(d, _txHeaders + (uint)(16 * i), NetHeaderSize, DescNext, (ushort)((2 * i) + 1));
            WriteDescriptor(d + 16, _txData + (uint)(BufferSize * i), 0, 0, 0);
        }
        // No interrupt for transmit completions (VRING_AVAIL_F_NO_INTERRUPT, 2.4.7).
        a.mov(esi, __dword_ptr[_txAvail]);
        a.mov(__word_ptr[esi], 1);

        SetStatus(StatusAcknowledge | StatusDriver | StatusDriverOk);
        // The MAC: six bytes at the start of the device configuration (5.1.4; MSI-X is off, so at 0x14).
        for (int i = 0; i < 6; i++)
        {
            IoPort(RegConfig + i);
            a.@in(al, dx);
            a.mov(__byte_ptr[_mac + (uint)i], al);
        }
        // Tell the device the receive buffers are there (a device may wait for a notification).
        IoPort(RegQueueNotify);
        a.xor(eax, eax);
        a.@out(dx, ax);

        // Interrupt: vector 0x20 + line. Lines the guest uses for itself (timer, keyboard, cascade, COM1)
        // or that do not exist leave the driver polling from the main loop.
        a.mov(ecx, __dword_ptr[_irqLine]);
        a.cmp(ecx, 15);
        a.ja(noIrq);
        a.cmp(ecx, 3);
        a.jb(noIrq);
        a.cmp(ecx, 4);
        a.je(noIrq);
        _g.LoadAddress32(eax, Routine("irq"));
        a.lea(edi, __[ecx * 8 + (int)(_idt + (GuestRuntime.IrqBase * 8u))]);
        a.mov(__word_ptr[edi], ax);
        a.mov(__word_ptr[edi + 2], GuestBuilder.CodeSelector);
        a.mov(__word_ptr[edi + 4], 0x8E00);
        a.shr(eax, 16);
        a.mov(__word_ptr[edi + 6], ax);
        // PCI INTx is level-sensitive (PCI 3.0, 2.2.6): mark the line level-triggered in the PIIX ELCR
        // (0x4D0/0x4D1) as firmware does, then unmask it (and the cascade for slave lines).
        a.mov(ebx, 1);
        a.shl(ebx, cl);
        a.mov(dx, 0x4D0);
        a.@in(al, dx);
        a.or(al, bl);
        a.@out(dx, al);
        a.mov(dx, 0x4D1);
        a.@in(al, dx);
        a.or(al, bh);
        a.@out(dx, al);
        a.not(ebx);
        a.cmp(ecx, 8);
        a.jae(slave);
        a.@in(al, 0x21);
        a.and(al, bl);
        a.@out(0x21, al);
        a.jmp(irqDone);
        a.Label(ref slave);
        a.@in(al, 0xA1);
        a.and(al, bh);
        a.@out(0xA1, al);
        a.@in(al, 0x21);
        a.and(al, unchecked((byte)~(1 << 2)));
        a.@out(0x21, al);
        a.jmp(irqDone);
        a.Label(ref noIrq);
        a.mov(__dword_ptr[_irqLine], 0xFF);
        a.Label(ref irqDone);

        a.mov(__dword_ptr[_ready], 1);
        GuestRuntime.Print(_g, "net: up, mac ");
        for (int i = 0; i < 6; i++)
        {
            if (i > 0)
            {
                a.mov(al, (byte)':');
                _g.Call("rt_putc");
            }
            a.mov(al, __byte_ptr[_mac + (uint)i]);
            _g.Call(Routine("hex8"));
        }
        GuestRuntime.Print(_g, $" ip {_net.Address}\n");
        a.jmp(done);

        a.Label(ref fail);
        SetStatus(StatusFailed);
        a.Label(ref done);
        a.popad();
        a.ret();
    }

    /// <summary>Selects queue <paramref name="queue"/>, checks its size, lays the legacy ring out in
    /// <paramref name="ring"/> (descriptors, available ring, used ring on the next page boundary; 2.4.2)
    /// and hands the device its page frame number.</summary>
    private void EmitQueueSetup(int queue, uint ring, uint mask, uint avail, uint used, Label fail)
    {
        Assembler a = A;
        Label ok = a.CreateLabel(), bad = a.CreateLabel();
        IoPort(RegQueueSelect);
        a.mov(ax, (ushort)queue);
        a.@out(dx, ax);
        IoPort(RegQueueSize);
        a.@in(ax, dx);
        a.movzx(ecx, ax);
        // A power of two (2.4), large enough for every chain we post, small enough for the ring memory.
        a.cmp(ecx, 2 * RxBuffers);
        a.jb(bad);
        a.cmp(ecx, MaxQueueSize);
        a.ja(bad);
        a.lea(eax, __[ecx - 1]);
        a.test(eax, ecx);
        a.jz(ok);
        a.Label(ref bad);
        GuestRuntime.Print(_g, $"net: unsupported virtio-net queue {queue} size\n");
        a.jmp(fail);
        a.Label(ref ok);
        a.mov(__dword_ptr[mask], eax);
        // Clear the ring memory (the driver may be started on memory a previous run used).
        a.mov(edi, ring);
        a.push(ecx);
        a.mov(ecx, RingBytes / 4);
        a.xor(eax, eax);
        a.rep.stosd();
        a.pop(ecx);
        // avail = ring + 16 * size; used = align4096(avail + 6 + 2 * size).
        a.mov(eax, ecx);
        a.shl(eax, 4);
        a.add(eax, ring);
        a.mov(__dword_ptr[avail], eax);
        a.lea(eax, __[eax + ecx * 2 + 6 + 4095]);
        a.and(eax, unchecked((int)0xFFFF_F000));
        a.mov(__dword_ptr[used], eax);
        IoPort(RegQueuePfn);
        a.mov(eax, ring >> 12);
        a.@out(dx, eax);
    }

    private void WriteDescriptor(uint at, uint address, int length, ushort flags, ushort next)
    {
        Assembler a = A;
        a.mov(__dword_ptr[at], address);
        a.mov(__dword_ptr[at + 4], 0);
        a.mov(__dword_ptr[at + 8], length);
        a.mov(__word_ptr[at + 12], flags);
        a.mov(__word_ptr[at + 14], next);
    }

    // ------------------------------------------------------------------ interrupt and receive

    private void EmitIrqHandler()
    {
        Assembler a = A;
        Label master = a.CreateLabel();
        _g.Mark(Routine("irq"));
        a.push(eax);
        a.push(edx);
        // Reading the ISR acknowledges the interrupt and drops INTx (4.1.4.5); keep its bits for net_poll.
        IoPort(RegIsr);
        a.@in(al, dx);
        a.or(__byte_ptr[_isr], al);
        a.mov(al, 0x20);
        a.cmp(__dword_ptr[_irqLine], 8);
        a.jb(master);
        a.@out(0xA0, al);
        a.Label(ref master);
        a.@out(0x20, al);
        a.pop(edx);
        a.pop(eax);
        a.iretd();
    }

    /// <summary>Emits "ZF clear when net_poll has work": a used receive entry not yet seen, or ISR bits. Clobbers EAX.</summary>
    public void EmitHasWork()
    {
        Assembler a = A;
        Label done = a.CreateLabel();
        a.cmp(__dword_ptr[_ready], 0);
        a.je(done);
        a.cmp(__dword_ptr[_isr], 0);
        a.jne(done);
        a.mov(eax, __dword_ptr[_rxUsed]);
        a.mov(ax, __word_ptr[eax + 2]);
        a.cmp(ax, __word_ptr[_rxLastUsed]);
        a.Label(ref done);
    }

    private void EmitPoll()
    {
        Assembler a = A;
        Label next = a.CreateLabel(), done = a.CreateLabel(), repost = a.CreateLabel(), noNotify = a.CreateLabel(),
            rings = a.CreateLabel(), budget = a.CreateLabel();

        _g.Mark(Routine("poll"));
        a.cmp(__dword_ptr[_ready], 0);
        a.jne(rings);
        a.ret();
        a.Label(ref rings);
        a.pushad();
        a.xor(eax, eax);
        a.xchg(__dword_ptr[_isr], eax); // atomic against the interrupt handler
        a.test(al, 2);
        a.jz(budget);
        // Configuration change: if the device reports DEVICE_NEEDS_RESET (2.1.2) it has stopped; say so once.
        IoPort(RegStatus);
        a.@in(al, dx);
        a.test(al, StatusNeedsReset);
        a.jz(budget);
        a.mov(__dword_ptr[_ready], 0);
        GuestRuntime.Print(_g, "net: virtio-net device needs reset; network stopped\n");
        a.jmp(noNotify);

        // At most PollBudget frames per call, so a flood cannot keep the guest's main loop from its other work.
        a.Label(ref budget);
        a.mov(ebp, PollBudget);
        a.Label(ref next);
        a.dec(ebp);
        a.js(done);
        a.mov(esi, __dword_ptr[_rxUsed]);
        a.mov(ax, __word_ptr[esi + 2]);
        a.cmp(ax, __word_ptr[_rxLastUsed]);
        a.je(done);
        a.movzx(ecx, __word_ptr[_rxLastUsed]);
        a.and(ecx, __dword_ptr[_rxMask]);
        a.mov(ebx, __dword_ptr[esi + ecx * 8 + 4]); // used element: id
        a.mov(ecx, __dword_ptr[esi + ecx * 8 + 8]); // used element: bytes written (header + frame)
        a.inc(__word_ptr[_rxLastUsed]);
        // Only chains we posted come back; anything else is ignored and not reposted.
        a.cmp(ebx, 2 * RxBuffers);
        a.jae(next);
        a.test(bl, 1);
        a.jnz(next);
        a.cmp(ecx, NetHeaderSize + 14);
        a.jb(repost);
        a.cmp(ecx, NetHeaderSize + BufferSize);
        a.ja(repost);
        a.sub(ecx, NetHeaderSize);
        a.imul(esi, ebx, BufferSize / 2);
        a.add(esi, _rxData);
        _g.Call(Routine("rx_frame"));
        a.Label(ref repost);
        a.mov(edi, __dword_ptr[_rxAvail]);
        a.movzx(eax, __word_ptr[_rxAvailIdx]);
        a.and(eax, __dword_ptr[_rxMask]);
        a.mov(__word_ptr[edi + eax * 2 + 4], bx);
        a.inc(__word_ptr[_rxAvailIdx]);
        a.mov(ax, __word_ptr[_rxAvailIdx]);
        a.mov(__word_ptr[edi + 2], ax); // ring entry first, then the index (x86 stores are ordered)
        a.mov(__dword_ptr[_reposted], 1);
        a.jmp(next);

        a.Label(ref done);
        a.cmp(__dword_ptr[_reposted], 0);
        a.je(noNotify);
        a.mov(__dword_ptr[_reposted], 0);
        IoPort(RegQueueNotify);
        a.xor(eax, eax);
        a.@out(dx, ax);
        a.Label(ref noNotify);
        a.popad();
        a.ret();
    }

    /// <summary>net_rx_frame: ESI = frame, ECX = length (14..BufferSize). Preserves all.</summary>
    private void EmitReceiveFrame()
    {
        Assembler a = A;
        Label drop = a.CreateLabel(), forUs = a.CreateLabel(), ipv4 = a.CreateLabel(), arp = a.CreateLabel(),
            toUs = a.CreateLabel(), noUdpSum = a.CreateLabel();
        uint ownIp = _net.AddressDword;

        _g.Mark(Routine("rx_frame"));
        a.pushad();
        // Destination: our MAC or broadcast (the VMM's filter already checks, a real network need not).
        a.mov(eax, __dword_ptr[esi]);
        a.cmp(eax, __dword_ptr[_mac]);
        Label bcast = a.CreateLabel();
        a.jne(bcast);
        a.mov(ax, __word_ptr[esi + 4]);
        a.cmp(ax, __word_ptr[_mac + 4]);
        a.je(forUs);
        a.Label(ref bcast);
        a.cmp(__dword_ptr[esi], -1);
        a.jne(drop);
        a.cmp(__word_ptr[esi + 4], -1);
        a.jne(drop);
        a.Label(ref forUs);
        a.mov(ax, __word_ptr[esi + 12]);
        a.cmp(ax, 0x0008); // EtherType 0x0800 as a little-endian load sees it
        a.je(ipv4);
        a.cmp(ax, 0x0608); // 0x0806
        a.je(arp);
        a.jmp(drop);

        // IPv4 (RFC 791, 3.1). EDI = header, EBX = header bytes, EDX = total length, EBP = UDP header.
        a.Label(ref ipv4);
        a.cmp(ecx, 14 + 20);
        a.jb(drop);
        a.lea(edi, __[esi + 14]);
        a.movzx(ebx, __byte_ptr[edi]);
        a.mov(al, bl);
        a.shr(al, 4);
        a.cmp(al, 4);
        a.jne(drop);
        a.and(ebx, 0x0F);
        a.cmp(ebx, 5);
        a.jb(drop);
        a.shl(ebx, 2);
        a.movzx(edx, __word_ptr[edi + 2]);
        a.xchg(dl, dh);
        a.lea(eax, __[ebx + 8]);
        a.cmp(edx, eax);
        a.jb(drop); // too short for its header and a UDP header
        a.lea(eax, __[ecx - 14]);
        a.cmp(edx, eax);
        a.ja(drop); // longer than the frame
        a.test(__word_ptr[edi + 6], 0xFF3F); // MF and fragment offset: fragments are not reassembled
        a.jnz(drop);
        a.cmp(__byte_ptr[edi + 9], 17);
        a.jne(drop);
        a.mov(eax, __dword_ptr[edi + 16]);
        a.cmp(eax, ownIp);
        a.je(toUs);
        a.cmp(eax, -1);
        a.jne(drop);
        a.Label(ref toUs);
        // Header checksum: the one's-complement sum over the header, checksum included, is 0xFFFF (RFC 1071).
        a.push(esi);
        a.push(ecx);
        a.mov(esi, edi);
        a.mov(ecx, ebx);
        a.xor(eax, eax);
        _g.Call(Routine("sum16"));
        a.pop(ecx);
        a.pop(esi);
        a.cmp(eax, 0xFFFF);
        a.jne(drop);
        // UDP (RFC 768): destination port, length within the IP payload.
        a.lea(ebp, __[edi + ebx]);
        a.cmp(__word_ptr[ebp + 2], _net.PortWord);
        a.jne(drop);
        a.movzx(ecx, __word_ptr[ebp + 4]);
        a.xchg(cl, ch);
        a.cmp(ecx, 8);
        a.jb(drop);
        a.sub(edx, ebx);
        a.cmp(ecx, edx);
        a.ja(drop);
        a.cmp(__word_ptr[ebp + 6], 0);
        a.je(noUdpSum); // zero: the sender computed none
        // Pseudo-header (addresses, protocol, UDP length) plus the datagram must sum to 0xFFFF.
        a.movzx(eax, __word_ptr[ebp + 4]);
        a.add(eax, 0x1100);
        a.push(ecx);
        a.lea(esi, __[edi + 12]);
        a.mov(ecx, 8);
        _g.Call(Routine("sum16"));
        a.pop(ecx);
        a.mov(esi, ebp);
        _g.Call(Routine("sum16"));
        a.cmp(eax, 0xFFFF);
        a.jne(drop);
        a.Label(ref noUdpSum);
        a.lea(esi, __[ebp + 8]);
        a.sub(ecx, 8);
        _g.Call("net_on_udp");
        a.jmp(drop);

        // ARP (RFC 826): answer "who has <our address>" from Ethernet/IPv4 requesters.
        a.Label(ref arp);
        a.cmp(ecx, 42);
        a.jb(drop);
        a.cmp(__dword_ptr[esi + 14], 0x0008_0100); // hardware type 1, protocol type 0x0800
        a.jne(drop);
        a.cmp(__word_ptr[esi + 18], 0x0406);       // hardware length 6, protocol length 4
        a.jne(drop);
        a.cmp(__word_ptr[esi + 20], 0x0100);       // operation 1: request
        a.jne(drop);
        a.cmp(__dword_ptr[esi + 38], ownIp);       // target protocol address
        a.jne(drop);
        a.mov(edi, _staging);
        a.mov(eax, __dword_ptr[esi + 22]);         // to the requester's hardware address
        a.mov(__dword_ptr[edi], eax);
        a.mov(__dword_ptr[edi + 32], eax);
        a.mov(ax, __word_ptr[esi + 26]);
        a.mov(__word_ptr[edi + 4], ax);
        a.mov(__word_ptr[edi + 36], ax);
        a.mov(eax, __dword_ptr[esi + 28]);         // target protocol address = requester's
        a.mov(__dword_ptr[edi + 38], eax);
        a.mov(eax, __dword_ptr[_mac]);
        a.mov(__dword_ptr[edi + 6], eax);
        a.mov(__dword_ptr[edi + 22], eax);
        a.mov(ax, __word_ptr[_mac + 4]);
        a.mov(__word_ptr[edi + 10], ax);
        a.mov(__word_ptr[edi + 26], ax);
        a.mov(__word_ptr[edi + 12], 0x0608);
        a.mov(__dword_ptr[edi + 14], 0x0008_0100);
        a.mov(__word_ptr[edi + 18], 0x0406);
        a.mov(__word_ptr[edi + 20], 0x0200);       // operation 2: reply
        a.mov(__dword_ptr[edi + 28], ownIp);
        a.mov(esi, edi);
        a.mov(ecx, 42);
        _g.Call(Routine("transmit"));

        a.Label(ref drop);
        a.popad();
        a.ret();
    }

    // ------------------------------------------------------------------ transmit

    private void EmitSendUdp()
    {
        Assembler a = A;
        Label sized = a.CreateLabel(), nonZero = a.CreateLabel(), up = a.CreateLabel();

        _g.Mark(Routine("send_udp"));
        a.cmp(__dword_ptr[_ready], 0);
        a.jne(up);
        a.ret();
        a.Label(ref up);
        a.pushad();
        a.cmp(ecx, MaxUdpPayload);
        a.jbe(sized);
        a.mov(ecx, MaxUdpPayload);
        a.Label(ref sized);
        a.mov(edi, _staging);
        // Ethernet II: broadcast destination, our MAC, EtherType IPv4.
        a.mov(__dword_ptr[edi], -1);
        a.mov(__word_ptr[edi + 4], -1);
        a.mov(eax, __dword_ptr[_mac]);
        a.mov(__dword_ptr[edi + 6], eax);
        a.mov(ax, __word_ptr[_mac + 4]);
        a.mov(__word_ptr[edi + 10], ax);
        a.mov(__word_ptr[edi + 12], 0x0008);
        // IPv4 header: version 4, IHL 5, TOS 0, total length, identification, DF, TTL 64, UDP.
        a.mov(__word_ptr[edi + 14], 0x0045);
        a.lea(eax, __[ecx + 28]);
        a.xchg(al, ah);
        a.mov(__word_ptr[edi + 16], ax);
        a.mov(ax, __word_ptr[_ipId]);
        a.inc(__word_ptr[_ipId]);
        a.xchg(al, ah);
        a.mov(__word_ptr[edi + 18], ax);
        a.mov(__word_ptr[edi + 20], 0x0040);
        a.mov(__word_ptr[edi + 22], 0x1140);
        a.mov(__word_ptr[edi + 24], 0);
        a.mov(__dword_ptr[edi + 26], _net.AddressDword);
        a.mov(__dword_ptr[edi + 30], _net.PeerDword);
        // UDP header: ports, length, checksum (filled below).
        a.mov(__word_ptr[edi + 34], _net.PortWord);
        a.mov(__word_ptr[edi + 36], _net.PortWord);
        a.lea(eax, __[ecx + 8]);
        a.xchg(al, ah);
        a.mov(__word_ptr[edi + 38], ax);
        a.mov(__word_ptr[edi + 40], 0);
        a.push(ecx);
        a.add(edi, UdpHeaders);
        a.rep.movsb();
        a.pop(ecx);
        // IPv4 header checksum (RFC 1071: summing the little-endian view and storing it little-endian is
        // the same as doing both in network order, section 2(B)).
        a.mov(esi, _staging + 14);
        a.push(ecx);
        a.mov(ecx, 20);
        a.xor(eax, eax);
        _g.Call(Routine("sum16"));
        a.not(eax);
        a.mov(__word_ptr[_staging + 24], ax);
        // UDP checksum over the pseudo-header (addresses, zero + protocol 17, UDP length) and the datagram.
        a.mov(esi, _staging + 26);
        a.mov(ecx, 8);
        a.movzx(eax, __word_ptr[_staging + 38]);
        a.add(eax, 0x1100);
        _g.Call(Routine("sum16"));
        a.pop(ecx);
        a.add(ecx, 8);
        a.mov(esi, _staging + 34);
        _g.Call(Routine("sum16"));
        a.not(ax);
        a.test(ax, ax);
        a.jnz(nonZero);
        a.not(ax); // a computed zero is sent as 0xFFFF (RFC 768)
        a.Label(ref nonZero);
        a.mov(__word_ptr[_staging + 40], ax);
        a.add(ecx, 34);
        a.mov(esi, _staging);
        _g.Call(Routine("transmit"));
        a.popad();
        a.ret();
    }

    private void EmitTransmit()
    {
        Assembler a = A;
        Label reclaim = a.CreateLabel(), reclaimed = a.CreateLabel(), drop = a.CreateLabel(), up = a.CreateLabel();

        _g.Mark(Routine("transmit"));
        a.pushad();
        a.cmp(__dword_ptr[_ready], 0);
        a.je(drop);
        a.cmp(ecx, MaxFrame);
        a.ja(drop);
        // Reclaim every chain the device has finished with.
        a.mov(edi, __dword_ptr[_txUsed]);
        a.Label(ref reclaim);
        a.mov(ax, __word_ptr[edi + 2]);
        a.cmp(ax, __word_ptr[_txLastUsed]);
        a.je(reclaimed);
        a.movzx(edx, __word_ptr[_txLastUsed]);
        a.and(edx, __dword_ptr[_txMask]);
        a.mov(eax, __dword_ptr[edi + edx * 8 + 4]);
        a.inc(__word_ptr[_txLastUsed]);
        a.cmp(eax, 2 * TxBuffers);
        a.jae(reclaim);
        a.shr(eax, 1);
        a.mov(__byte_ptr[eax + _txBusy], 0);
        a.jmp(reclaim);
        a.Label(ref reclaimed);
        a.mov(ebx, __dword_ptr[_txNextSlot]);
        a.cmp(__byte_ptr[ebx + _txBusy], 0);
        a.jne(drop); // every buffer still with the device: drop rather than wait
        a.Label(ref up);
        a.mov(__byte_ptr[ebx + _txBusy], 1);
        a.lea(eax, __[ebx + 1]);
        a.and(eax, TxBuffers - 1);
        a.mov(__dword_ptr[_txNextSlot], eax);
        a.imul(edi, ebx, BufferSize);
        a.add(edi, _txData);
        a.push(ecx);
        a.rep.movsb();
        a.pop(ecx);
        a.mov(eax, ebx);
        a.shl(eax, 5);
        a.mov(__dword_ptr[eax + (int)(_txRing + 16 + 8)], ecx); // frame descriptor's length
        a.mov(edi, __dword_ptr[_txAvail]);
        a.movzx(eax, __word_ptr[_txAvailIdx]);
        a.and(eax, __dword_ptr[_txMask]);
        a.lea(edx, __[ebx * 2]);
        a.mov(__word_ptr[edi + eax * 2 + 4], dx);
        a.inc(__word_ptr[_txAvailIdx]);
        a.mov(ax, __word_ptr[_txAvailIdx]);
        a.mov(__word_ptr[edi + 2], ax);
        IoPort(RegQueueNotify);
        a.mov(ax, 1);
        a.@out(dx, ax);
        a.inc(__dword_ptr[_framesSent]);
        a.popad();
        a.clc();
        a.ret();
        a.Label(ref drop);
        a.inc(__dword_ptr[_txDropped]);
        a.popad();
        a.stc();
        a.ret();
    }

    // ------------------------------------------------------------------ small routines

    /// <summary>net_sum16: EAX += the 16-bit little-endian words of ECX bytes at ESI (an odd last byte
    /// padded with zero), folded to 16 bits (RFC 1071, 4.1). Only EAX changes.</summary>
    private void EmitChecksum()
    {
        Assembler a = A;
        Label loop = a.CreateLabel(), tail = a.CreateLabel(), fold = a.CreateLabel();
        _g.Mark(Routine("sum16"));
        a.push(esi);
        a.push(ecx);
        a.push(edx);
        a.Label(ref loop);
        a.cmp(ecx, 2);
        a.jb(tail);
        a.movzx(edx, __word_ptr[esi]);
        a.add(eax, edx);
        a.add(esi, 2);
        a.sub(ecx, 2);
        a.jmp(loop);
        a.Label(ref tail);
        a.test(ecx, ecx);
        a.jz(fold);
        a.movzx(edx, __byte_ptr[esi]);
        a.add(eax, edx);
        a.Label(ref fold);
        for (int i = 0; i < 2; i++)
        {
            a.mov(edx, eax);
            a.shr(edx, 16);
            a.and(eax, 0xFFFF);
            a.add(eax, edx);
        }
        a.pop(edx);
        a.pop(ecx);
        a.pop(esi);
        a.ret();
    }

    /// <summary>net_hex8 (AL as two lower-case hex digits on COM1) and net_fmt_dec (EAX in decimal
    /// at EDI, EDI advanced past it).</summary>
    private void EmitFormatting()
    {
        Assembler a = A;
        _g.Mark(Routine("hex8"));
        a.push(eax);
        a.push(eax);
        a.shr(al, 4);
        _g.Call(Routine("hex_digit"));
        a.pop(eax);
        a.and(al, 0x0F);
        _g.Call(Routine("hex_digit"));
        a.pop(eax);
        a.ret();

        Label isNum = a.CreateLabel();
        _g.Mark(Routine("hex_digit"));
        a.add(al, (byte)'0');
        a.cmp(al, (byte)'9');
        a.jbe(isNum);
        a.add(al, 'a' - '0' - 10);
        a.Label(ref isNum);
        _g.Call("rt_putc");
        a.ret();

        Label divide = a.CreateLabel(), emit = a.CreateLabel();
        _g.Mark(Routine("fmt_dec"));
        a.push(eax);
        a.push(ebx);
        a.push(ecx);
        a.push(edx);
        a.xor(ecx, ecx);
        a.mov(ebx, 10);
        a.Label(ref divide);
        a.xor(edx, edx);
        a.div(ebx);
        a.push(edx);
        a.inc(ecx);
        a.test(eax, eax);
        a.jnz(divide);
        a.Label(ref emit);
        a.pop(eax);
        a.add(al, (byte)'0');
        a.stosb();
        a.dec(ecx);
        a.jnz(emit);
        a.pop(edx);
        a.pop(ecx);
        a.pop(ebx);
        a.pop(eax);
        a.ret();
    }

    /// <summary>Emits code that copies the constant <paramref name="text"/> to EDI (advancing EDI). Clobbers ESI, ECX.</summary>
    public void EmitCopyText(string text)
    {
        A.mov(esi, _g.String(text));
        A.mov(ecx, text.Length);
        A.rep.movsb();
    }
}
