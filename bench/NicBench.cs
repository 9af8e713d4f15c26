using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using SecureVmm.Appliance.Network;
using SecureVmm.NetFilter;
using SecureVmm.NetFilter.Backends;
using SecureVmm.Tcb.Devices;
using SecureVmm.Tcb.Memory;

namespace SecureVmm.Bench;

/// <summary>
/// Guest transmit through the whole NIC path on one thread: the driver's queue notify → virtio-net
/// reads the descriptor chain from guest RAM (virtio 1.0 2.4, legacy layout) → NicAttachment →
/// filter → none backend, and the used-ring update. 64-byte and 1514-byte ICMP frames; also bytes
/// allocated per frame (target 0).
/// <c>dotnet run -c Release --project bench -- nic [seconds-per-case]</c>.
/// </summary>
public static class NicBench
{
    private sealed class NoIrq : IIrqLines
    {
        public void SetIrq(int line, bool level)
        {
        }
    }

    private const ushort Io = 0xC000;
    private const uint TxRing = 0x20000, Buffer = 0x40000;

    public static int Run(string[] args)
    {
        double seconds = args.Length > 0 && double.TryParse(args[0], NumberStyles.Float, CultureInfo.InvariantCulture, out var s) && s > 0 ? s : 2;
        Console.WriteLine($"virtio-net transmit -> filter -> backend, one thread, {seconds:0.#} s per case:");
        foreach (int size in new[] { 64, 1514 })
        {
            Measure(size, seconds);
        }
        return 0;
    }

    private static void Measure(int frameSize, double seconds)
    {
        using var ram = new GuestRam(1 << 20);
        var map = new PhysicalMemoryMap(ram);
        byte[] mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
        var nic = new VirtioNet(map, new NoIrq(), mac);
        nic.WriteConfig(0x04, 2, 0x0005);
        var config = new FilterConfig
        {
            Mac = MacAddress.Read(mac),
            Addresses = [IPAddress.Parse("10.200.1.2")],
            Rules = [AllowRule.Arp(), new AllowRule { Name = "ping", IpProtocol = IpProtocols.Icmp, IcmpType = 8 }],
        };
        var backend = new NoneBackend();
        using var attachment = new NicAttachment(nic, "bench", config, backend, flushInterval: TimeSpan.FromHours(1));

        // Driver bring-up as Linux's virtio_pci legacy does it (4.1.4.8), TX queue only.
        nic.Write(Io + 0x12, 1, 1 | 2);
        nic.Write(Io + 0x04, 4, nic.Read(Io + 0x00, 4));
        nic.Write(Io + 0x0E, 2, 1);
        nic.Write(Io + 0x08, 4, TxRing >> 12);
        nic.Write(Io + 0x12, 1, 1 | 2 | 4);

        // One buffer: virtio_net_hdr (zero) + an ICMP echo request from the VM's own addresses.
        var frame = ram.Slice(Buffer, VirtioNet.NetHeaderSize + frameSize);
        frame.Clear();
        var eth = frame[VirtioNet.NetHeaderSize..];
        eth[0] = 0x02; // peer MAC, locally administered unicast
        mac.CopyTo(eth[6..]);
        BinaryPrimitives.WriteUInt16BigEndian(eth[12..], 0x0800);
        var ip = eth[14..];
        ip[0] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(ip[2..], (ushort)(frameSize - 14));
        ip[8] = 64;
        ip[9] = 1;
        IPAddress.Parse("10.200.1.2").TryWriteBytes(ip[12..], out _);
        IPAddress.Parse("10.200.1.1").TryWriteBytes(ip[16..], out _);
        ip[20] = 8;
        var desc = ram.Slice(TxRing, 16);
        BinaryPrimitives.WriteUInt64LittleEndian(desc, Buffer);
        BinaryPrimitives.WriteUInt32LittleEndian(desc[8..], (uint)(VirtioNet.NetHeaderSize + frameSize));
        uint avail = TxRing + (16u * VirtioNet.QueueSize);
        ushort index = 0;

        void Send(int count)
        {
            for (int i = 0; i < count; i++)
            {
                var availRing = ram.Slice(avail, 4 + (2 * VirtioNet.QueueSize));
                BinaryPrimitives.WriteUInt16LittleEndian(availRing[(4 + (2 * (index % VirtioNet.QueueSize)))..], 0);
                index++;
                BinaryPrimitives.WriteUInt16LittleEndian(availRing[2..], index);
                nic.Write(Io + 0x10, 2, 1); // queue notify: TX
            }
        }

        var warmUp = Stopwatch.StartNew();
        while (warmUp.ElapsedMilliseconds < 500)
        {
            Send(10_000); // let tiered compilation reach its optimised code first
        }
        long sentBefore = backend.Discarded;
        long allocatedBefore = GC.GetAllocatedBytesForCurrentThread();
        var clock = Stopwatch.StartNew();
        long frames = 0;
        while (clock.Elapsed.TotalSeconds < seconds)
        {
            Send(10_000);
            frames += 10_000;
        }
        double elapsed = clock.Elapsed.TotalSeconds;
        long allocated = GC.GetAllocatedBytesForCurrentThread() - allocatedBefore;
        if (backend.Discarded - sentBefore != frames || nic.Error != VirtioNetError.None)
        {
            Console.WriteLine($"  {frameSize,5}-byte frames: FAILED: {backend.Discarded - sentBefore} of {frames} reached the backend, NIC error {nic.Error}");
            return;
        }
        Console.WriteLine($"  {frameSize,5}-byte frames: {frames / elapsed / 1e6,6:F2} M frames/s, {frames * (double)frameSize * 8 / elapsed / 1e9,6:F2} Gbit/s, {(double)allocated / frames:F3} bytes allocated per frame");
    }
}
