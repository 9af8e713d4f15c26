using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using SecureVmm.Policy.Guests;
using SecureVmm.Tests.Support;
using Xunit;
using Xunit.Abstractions;

namespace SecureVmm.Tests.Guests;

/// <summary>
/// The guests' virtio-net driver against QEMU's own legacy virtio-net (disable-modern=on), with
/// firmware (SeaBIOS) choosing the BAR and the interrupt line: shows the driver follows the spec
/// rather than this project's device model. QEMU's UDP socket netdev carries each Ethernet frame as
/// one datagram between two loopback ports, so the test sees the guest's frames on a plain socket
/// and injects frames the same way.
/// </summary>
public class GuestNetQemuTests(ITestOutputHelper output)
{
    /// <summary>qemu-system-i386 with COM1 on stdio and the NIC on a loopback UDP socket pair; always killed.</summary>
    private sealed class QemuWithNic : IDisposable
    {
        private readonly Process _process;
        private readonly StringBuilder _serial = new();
        private readonly string _dir;
        public readonly UdpClient Link;
        public readonly IPEndPoint QemuEnd;

        public QemuWithNic(string qemu, byte[] image)
        {
            _dir = Directory.CreateTempSubdirectory("svmm-qemu-net").FullName;
            string kernel = Path.Combine(_dir, "guest.bin");
            File.WriteAllBytes(kernel, image);
            Link = new UdpClient(new IPEndPoint(IPAddress.Loopback, 0));
            int ours = ((IPEndPoint)Link.Client.LocalEndPoint!).Port;
            int theirs;
            using (var probe = new UdpClient(new IPEndPoint(IPAddress.Loopback, 0)))
            {
                theirs = ((IPEndPoint)probe.Client.LocalEndPoint!).Port;
            }
            QemuEnd = new IPEndPoint(IPAddress.Loopback, theirs);
            var psi = new ProcessStartInfo(qemu)
            {
                RedirectStandardInput = true,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            foreach (string arg in new[]
            {
                "-accel", "tcg", "-m", "64", "-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot",
                "-netdev", $"socket,id=n0,udp=127.0.0.1:{ours},localaddr=127.0.0.1:{theirs}",
                "-device", $"virtio-net-pci,disable-modern=on,netdev=n0,mac={GuestNetRig.GuestMac}",
                "-kernel", kernel,
            })
            {
                psi.ArgumentList.Add(arg);
            }
            _process = Process.Start(psi)!;
            var reader = new Thread(() =>
            {
                var buffer = new char[256];
                int n;
                while ((n = _process.StandardOutput.Read(buffer, 0, buffer.Length)) > 0)
                {
                    lock (_serial)
                    {
                        _serial.Append(buffer, 0, n);
                    }
                }
            }) { IsBackground = true };
            reader.Start();
        }

        public string Serial
        {
            get
            {
                lock (_serial)
                {
                    return _serial.ToString();
                }
            }
        }

        public bool WaitForText(string text, TimeSpan timeout)
        {
            var clock = Stopwatch.StartNew();
            while (!Serial.Contains(text, StringComparison.Ordinal) && clock.Elapsed < timeout && !_process.HasExited)
            {
                Thread.Sleep(20);
            }
            return Serial.Contains(text, StringComparison.Ordinal);
        }

        public void Type(string text)
        {
            _process.StandardInput.Write(text);
            _process.StandardInput.Flush();
        }

        /// <summary>The next UDP datagram frame the guest sent whose payload satisfies <paramref name="match"/>, or null.</summary>
        public (ParsedUdp Datagram, byte[] Frame)? Receive(Func<ParsedUdp, bool> match, TimeSpan timeout)
        {
            var clock = Stopwatch.StartNew();
            while (clock.Elapsed < timeout)
            {
                Link.Client.ReceiveTimeout = 500;
                try
                {
                    var from = new IPEndPoint(IPAddress.Any, 0);
                    byte[] frame = Link.Receive(ref from);
                    if (GuestNetRig.ParseUdp(frame) is { } d && match(d))
                    {
                        return (d, frame);
                    }
                }
                catch (SocketException e) when (e.SocketErrorCode == SocketError.TimedOut)
                {
                    // keep waiting
                }
            }
            return null;
        }

        public void Dispose()
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
                _process.WaitForExit();
            }
            _process.Dispose();
            Link.Dispose();
            Directory.Delete(_dir, true);
        }
    }

    [Fact]
    public void KioskDatagramsLeaveQemusVirtioNet()
    {
        string? qemu = HostTools.Require("qemu-system-i386", output, "qemu-system-x86");
        if (qemu is null)
        {
            return;
        }
        using var vm = new QemuWithNic(qemu, ProjectGuests.Build("kiosk")!.Bytes);
        var got = vm.Receive(d => d.Text.StartsWith("SECRET kiosk uptime ", StringComparison.Ordinal), TimeSpan.FromSeconds(40));
        output.WriteLine(vm.Serial);
        Assert.True(got is not null, "no datagram from the kiosk on QEMU's NIC:\n" + vm.Serial);
        var (d, frame) = got.Value;
        output.WriteLine($"received: {d.Text} ({frame.Length} bytes)");
        Assert.Matches(@"^SECRET kiosk uptime \d+ s$", d.Text);
        Assert.Contains($"net: up, mac {GuestNetRig.GuestMac} ip 10.1.0.10", vm.Serial, StringComparison.Ordinal);
        Assert.Equal(GuestNetRig.GuestMac, d.Source);
        Assert.Equal(GuestNetwork.KioskDefault.Address, d.SourceIp);
        Assert.Equal(GuestNetwork.KioskDefault.Peer, d.DestinationIp);
        Assert.Equal(7000, d.SourcePort);
        Assert.Equal(7000, d.DestinationPort);
        Assert.True(d.Ipv4ChecksumOk && d.UdpChecksumOk);
        Assert.True(GuestNetRig.DemoFilter(GuestNetwork.KioskDefault).Outbound(frame).IsAllowed);
    }

    [Fact]
    public void InteractiveTalksBothWaysOnQemusVirtioNet()
    {
        string? qemu = HostTools.Require("qemu-system-i386", output, "qemu-system-x86");
        if (qemu is null)
        {
            return;
        }
        var net = GuestNetwork.InteractiveDefault;
        using var vm = new QemuWithNic(qemu, ProjectGuests.Build("interactive")!.Bytes);
        Assert.True(vm.WaitForText("unclass> ", TimeSpan.FromSeconds(30)), vm.Serial);
        byte[] frame = GuestNetRig.UdpTo(net, "hello through qemu");
        vm.Link.Send(frame, frame.Length, vm.QemuEnd);
        bool shown = vm.WaitForText("net: hello through qemu", TimeSpan.FromSeconds(20));
        vm.Type("typed on qemu\r");
        var got = vm.Receive(d => d.Text == "unclass: typed on qemu", TimeSpan.FromSeconds(20));
        output.WriteLine(vm.Serial);
        Assert.True(shown, "the datagram sent into QEMU was not shown");
        Assert.True(got is not null, "the typed line did not leave QEMU's NIC");
        Assert.Equal(GuestNetRig.GuestMac, got.Value.Datagram.Source);
        Assert.True(got.Value.Datagram.Ipv4ChecksumOk && got.Value.Datagram.UdpChecksumOk);
        Assert.True(GuestNetRig.DemoFilter(net).Outbound(got.Value.Frame).IsAllowed);
    }
}
