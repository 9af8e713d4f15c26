using System.Buffers.Binary;
using System.CommandLine;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using SecureVmm.Appliance.Audit;
using SecureVmm.Appliance.Guests;
using SecureVmm.Appliance.Policy;
using SecureVmm.Appliance.Run;
using SecureVmm.Appliance.Runtime;
using SecureVmm.Policy.Guests;
using SecureVmm.Policy.Images;
using SecureVmm.Policy.Keys;
using SecureVmm.Policy.Policy;
using SecureVmm.Tcb.Audit;

namespace SecureVmm.Appliance.Demo;

/// <summary>
/// `securevmm demo`: the whole appliance in one command on a machine with only the .NET SDK. Creates
/// (once) a demo administrator, release and audit key; builds and signs two images from the
/// project's own guests — a SECRET kiosk screen and an UNCLASSIFIED interactive shell — writes and
/// signs a policy that binds each to its own network (pcap and UDP backends: no root needed), runs
/// both side by side, then verifies both audit logs and prints a summary. On the UDP network a small
/// peer in this process answers the guest, and also sends one frame the filter must drop.
/// </summary>
public static class DemoCommand
{
    public const ushort GuestPort = 7000;
    public const ushort ForbiddenPort = 6666;
    private static readonly IPAddress PublicPeer = IPAddress.Parse("10.2.0.1");
    private static readonly IPAddress PublicGuest = IPAddress.Parse("10.2.0.10");
    private static readonly byte[] PublicGuestMac = [0x02, 0x5e, 0xc0, 0x00, 0x02, 0x0a];
    private static readonly byte[] PeerMac = [0x02, 0x5e, 0xc0, 0x00, 0x02, 0x01];

    public sealed record DemoOptions(string Directory, double? Seconds, bool Linux, ConsoleMode Console, string? Control);

    public static Command Build()
    {
        var dir = new Option<string?>("--dir") { HelpName = "DIR", Description = "Where the demo keeps its keys, images, policy, captures and audit logs (default ~/.local/share/securevmm/demo)" };
        var seconds = new Option<double?>("--seconds") { Description = "Stop after this many seconds (default: run until Ctrl-C)" };
        var linux = new Option<bool>("--linux") { Description = "Run two busybox Linux VMs (Debian's kernel; needs guests-policy/guests/debian/fetch.sh first) instead of the project's guests" };
        var console = new Option<ConsoleMode>("--console") { Description = "Auto (live console on a terminal, else lines), Terminal, Lines or None", DefaultValueFactory = _ => ConsoleMode.Auto };
        var control = new Option<string?>("--control") { HelpName = "PATH", Description = "Control socket for `status` and `stop` (default as for `run`)" };
        var command = new Command("demo", "Build, sign and run a two-VM appliance (SECRET kiosk and UNCLASSIFIED shell, each on its own network), then verify its audit logs")
        {
            dir, seconds, linux, console, control,
        };
        command.SetAction(parse => Run(new DemoOptions(parse.GetValue(dir) ?? DefaultDirectory, parse.GetValue(seconds), parse.GetValue(linux),
            parse.GetValue(console), parse.GetValue(control))));
        return command;
    }

    public static string DefaultDirectory =>
        Path.Combine(Environment.GetEnvironmentVariable("XDG_DATA_HOME") is { Length: > 0 } data
            ? data
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".local", "share"), "securevmm", "demo");

    public static int Run(DemoOptions options) => CommandBoundary.Run(() =>
    {
        var log = Console.Error;
        var builder = new SignedApplianceBuilder(options.Directory);
        log.WriteLine(builder.CreatedKeys
            ? $"demo: created demo keys in {builder.Directory} (admin, release, audit)"
            : $"demo: using the demo keys in {builder.Directory}");

        (string secretImage, string publicImage) = options.Linux ? LinuxImages(builder) : ProjectImages(builder);
        ArchivePreviousRun(builder);
        int appliancePort = FreeUdpPort();
        int peerPort = FreeUdpPort(appliancePort);
        string policyPath = builder.Policy(DemoPolicy(builder, secretImage, publicImage, options.Linux, appliancePort, peerPort));
        log.WriteLine($"demo: wrote and signed {policyPath}");

        var runOptions = new RunCommand.RunOptions(policyPath, builder.AdminPublicKeyPath, null, builder.AuditSecretKeyPath,
            options.Control ?? Path.Combine(builder.Directory, "control.sock"), options.Seconds, options.Console);
        var policy = PolicyLoader.LoadVerified(policyPath, builder.AdminKey.PublicKey);
        ApplianceRuntime runtime;
        try
        {
            runtime = ApplianceRuntime.Prepare(policy, new Ed25519AuditSigner(builder.AuditKey), log);
        }
        catch (ApplianceException e)
        {
            log.WriteLine($"securevmm demo: {e.Message}");
            return Cli.ExitUsage;
        }
        int status;
        DemoPeer peer;
        using (runtime)
        {
            using (peer = new DemoPeer(new IPEndPoint(IPAddress.Loopback, peerPort), new IPEndPoint(IPAddress.Loopback, appliancePort), log))
            {
                // Without a person at a terminal, the demo types one line into the UNCLASSIFIED shell,
                // which sends it to the peer: keys in, frames out, all of it audited.
                bool unattended = options.Console is ConsoleMode.Lines or ConsoleMode.None
                    || (options.Console == ConsoleMode.Auto && (Console.IsOutputRedirected || Console.IsInputRedirected));
                using var typist = unattended && !options.Linux
                    ? new Timer(_ => runtime.Vms[1].SendInput("hello from the demo operator\r"u8), null, TimeSpan.FromSeconds(2), Timeout.InfiniteTimeSpan)
                    : null;
                status = RunCommand.RunPrepared(runtime, runOptions, log);
            }
        }
        return Summarize(runtime, builder, peer, status, log);
    });

    private static (string Secret, string Public) ProjectImages(SignedApplianceBuilder builder)
    {
        GuestImage kiosk = ProjectGuests.Build("kiosk")!;
        GuestImage shell = ProjectGuests.Build("interactive")!;
        return (builder.Image("secret-kiosk", ImageKind.Multiboot, kiosk.Bytes), builder.Image("public-shell", ImageKind.Multiboot, shell.Bytes));
    }

    private static (string Secret, string Public) LinuxImages(SignedApplianceBuilder builder)
    {
        string cache = GuestCommand.DefaultDebianCache;
        string kernel = Path.Combine(cache, "vmlinuz");
        if (!File.Exists(kernel) || !File.Exists(Path.Combine(cache, "busybox")))
        {
            throw new UsageException($"demo --linux: no Debian guest in {cache}; run guests-policy/guests/debian/fetch.sh first (or set SECUREVMM_GUEST_CACHE)");
        }
        byte[] vmlinuz = File.ReadAllBytes(kernel);
        byte[] initrd = GuestCommand.BuildDebianInitramfs(cache);
        return (builder.Image("secret-linux", ImageKind.Linux, vmlinuz, initrd, "console=ttyS0 quiet"),
            builder.Image("public-linux", ImageKind.Linux, vmlinuz, initrd, "console=ttyS0 quiet"));
    }

    /// <summary>Audit logs are never overwritten: the previous run's logs move to audit.previous/.</summary>
    private static void ArchivePreviousRun(SignedApplianceBuilder builder)
    {
        string audit = builder.Path("audit");
        string previous = builder.Path("audit.previous");
        if (Directory.Exists(audit))
        {
            if (Directory.Exists(previous))
            {
                Directory.Delete(previous, true);
            }
            Directory.Move(audit, previous);
        }
    }

    private static int FreeUdpPort(int avoid = 0)
    {
        while (true)
        {
            using var probe = new UdpClient(new IPEndPoint(IPAddress.Loopback, 0));
            int port = ((IPEndPoint)probe.Client.LocalEndPoint!).Port;
            if (port != avoid)
            {
                return port;
            }
        }
    }

    private static PolicyDocument DemoPolicy(SignedApplianceBuilder builder, string secretImage, string publicImage, bool linux, int appliancePort, int peerPort)
    {
        string secretName = linux ? "secret-linux" : "secret-kiosk";
        string publicName = linux ? "public-linux" : "public-shell";
        return new PolicyDocument
        {
            FormatVersion = 1,
            Appliance = "securevmm demo",
            Host = new HostDocument { MemoryBudgetMiB = linux ? 512 : 128 },
            RollbackStateFile = builder.Path("state/rollback-state.json"),
            TrustAnchors = [builder.ReleaseAnchor(secretName, publicName)],
            Networks =
            [
                new NetworkDocument
                {
                    Name = "secret-net",
                    Description = "the SECRET network: every frame the filter allows is captured",
                    Label = new LabelDocument { Level = "SECRET", Colour = "red" },
                    Backend = new BackendDocument { Type = "pcap", File = builder.Path("captures/secret-net.pcap") },
                    Mac = "02:5e:c0:00:01:0a",
                    Addresses = ["10.1.0.10/24"],
                    Filter = new FilterDocument
                    {
                        DefaultAction = "deny",
                        Rules =
                        [
                            new FilterRuleDocument { Direction = "out", Action = "allow", Ethertype = "ipv4", Protocol = "udp", Cidr = "10.1.0.1/32", Ports = "7000" },
                            new FilterRuleDocument { Direction = "out", Action = "allow", Ethertype = "arp" },
                        ],
                    },
                },
                new NetworkDocument
                {
                    Name = "public-net",
                    Description = "the UNCLASSIFIED network: UDP to a peer in the demo process",
                    Label = new LabelDocument { Level = "UNCLASSIFIED", Colour = "green" },
                    Backend = new BackendDocument { Type = "udp", Local = $"127.0.0.1:{appliancePort}", Remote = $"127.0.0.1:{peerPort}" },
                    Mac = "02:5e:c0:00:02:0a",
                    Addresses = ["10.2.0.10/24"],
                    Filter = new FilterDocument
                    {
                        DefaultAction = "deny",
                        Rules =
                        [
                            new FilterRuleDocument { Direction = "out", Action = "allow", Ethertype = "ipv4", Protocol = "udp", Cidr = "10.2.0.1/32", Ports = "7000" },
                            new FilterRuleDocument { Direction = "in", Action = "allow", Ethertype = "ipv4", Protocol = "udp", Cidr = "10.2.0.1/32", Ports = "7000",
                                RateLimit = new RateLimitDocument { PacketsPerSecond = 50, Burst = 100 } },
                            new FilterRuleDocument { Direction = "out", Action = "allow", Ethertype = "arp" },
                            new FilterRuleDocument { Direction = "in", Action = "allow", Ethertype = "arp" },
                        ],
                    },
                },
            ],
            Vms =
            [
                new VmDocument
                {
                    Name = secretName,
                    Description = linux ? "busybox Linux on the SECRET network" : "a fixed kiosk screen on the SECRET network",
                    Label = new LabelDocument { Level = "SECRET", Colour = "red" },
                    MemoryMiB = linux ? 160 : 16,
                    Image = new ImageReferenceDocument { Path = secretImage, Name = secretName, Signers = ["release"] },
                    Network = "secret-net",
                    Devices = linux ? ["serial", "vga", "keyboard", "rtc", "virtio-net"] : ["serial", "vga", "virtio-net"],
                    Console = linux ? "serial" : "vga",
                    Clock = "realtime",
                    Audit = new AuditDocument { Path = builder.Path($"audit/{secretName}.audit") },
                },
                new VmDocument
                {
                    Name = publicName,
                    Description = linux ? "busybox Linux on the UNCLASSIFIED network" : "an interactive serial shell on the UNCLASSIFIED network",
                    Label = new LabelDocument { Level = "UNCLASSIFIED", Colour = "green" },
                    MemoryMiB = linux ? 160 : 16,
                    Image = new ImageReferenceDocument { Path = publicImage, Name = publicName, Signers = ["release"] },
                    Network = "public-net",
                    Devices = linux ? ["serial", "vga", "keyboard", "rtc", "virtio-net"] : ["serial", "virtio-net"],
                    Console = "serial",
                    Clock = "realtime",
                    Audit = new AuditDocument { Path = builder.Path($"audit/{publicName}.audit") },
                },
            ],
        };
    }

    private static int Summarize(ApplianceRuntime runtime, SignedApplianceBuilder builder, DemoPeer peer, int status, TextWriter log)
    {
        var auditKey = new Ed25519AuditVerifier(builder.AuditKey.PublicKey);
        bool allVerified = true;
        log.WriteLine();
        log.WriteLine("demo summary:");
        foreach (var vm in runtime.Vms)
        {
            var kinds = new Dictionary<AuditKind, long>();
            var result = AuditLogVerifier.VerifyFile(vm.AuditPath, auditKey, (in AuditRecord r) => kinds[r.Kind] = kinds.GetValueOrDefault(r.Kind) + 1);
            allVerified &= result.Ok && result.Closed && result.SignaturesChecked;
            var s = vm.ReadStatus();
            log.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"  {vm.VmName} ({vm.Label}): exit status {vm.ExitStatus}, {s.Instructions:N0} instructions, {s.Exits:N0} exits; network {s.Network}: {s.FramesOut:N0} frames out, {s.FramesIn:N0} in, {s.DroppedOut + s.DroppedIn:N0} dropped"));
            log.WriteLine(result.Ok
                ? string.Create(CultureInfo.InvariantCulture, $"    audit log {vm.AuditPath}: verified, {result.Records:N0} records, {result.Checkpoints} signed checkpoints (key {auditKey.KeyId}), {(result.Closed ? "closed" : "NOT CLOSED")}")
                : $"    audit log {vm.AuditPath}: FAILED verification: {result.Problem}");
            log.WriteLine("    records: " + string.Join(", ", kinds.OrderBy(k => k.Key).Select(k => string.Create(CultureInfo.InvariantCulture, $"{k.Key} {k.Value:N0}"))));
        }
        log.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"  peer on public-net: {peer.FramesReceived:N0} frames received from the guest, {peer.FramesSent:N0} sent (1 of them to a forbidden port, for the filter to drop)"));
        foreach (var line in peer.Payloads.Take(5))
        {
            log.WriteLine("    guest said: " + line);
        }
        log.WriteLine($"  check a log yourself: securevmm audit verify {runtime.Vms[0].AuditPath} --key {builder.AuditPublicKeyPath}");
        log.WriteLine(allVerified ? "demo: audit logs verified" : "demo: AUDIT LOG VERIFICATION FAILED");
        return allVerified ? status : Boot.BootCommand.ExitAuditFailure;
    }

    /// <summary>
    /// The other end of the UDP network: receives the guest's frames (one datagram each) and sends it a
    /// greeting every two seconds from 10.2.0.1:7000, plus one frame to a port the filter does not allow.
    /// </summary>
    private sealed class DemoPeer : IDisposable
    {
        private readonly Socket _socket;
        private readonly IPEndPoint _appliance;
        private readonly TextWriter _log;
        private readonly Thread _receiver;
        private readonly Timer _sender;
        private readonly Lock _lock = new();
        private readonly List<string> _payloads = [];
        private long _received;
        private long _sent;
        private volatile bool _stopping;

        public DemoPeer(IPEndPoint local, IPEndPoint appliance, TextWriter log)
        {
            _appliance = appliance;
            _log = log;
            _socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
            _socket.Bind(local);
            _receiver = new Thread(Receive) { IsBackground = true, Name = "demo peer" };
            _receiver.Start();
            _sender = new Timer(_ => Send(), null, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(2));
        }

        public long FramesReceived => Interlocked.Read(ref _received);

        public long FramesSent => Interlocked.Read(ref _sent);

        public IReadOnlyList<string> Payloads
        {
            get
            {
                lock (_lock)
                {
                    return [.. _payloads];
                }
            }
        }

        private void Send()
        {
            long n = Interlocked.Increment(ref _sent);
            try
            {
                if (n == 2)
                {
                    _socket.SendTo(UdpFrame(ForbiddenPort, Encoding.ASCII.GetBytes("this frame uses a port the policy does not allow")), _appliance);
                    return;
                }
                _socket.SendTo(UdpFrame(GuestPort, Encoding.ASCII.GetBytes(string.Create(CultureInfo.InvariantCulture, $"hello from the UNCLASSIFIED network #{n}"))), _appliance);
            }
            catch (SocketException)
            {
                // The appliance's end is gone (stopping); nothing to deliver to.
            }
            catch (ObjectDisposedException)
            {
            }
        }

        private void Receive()
        {
            var buffer = new byte[65536];
            while (!_stopping)
            {
                int n;
                try
                {
                    n = _socket.Receive(buffer);
                }
                catch (Exception e) when (e is SocketException or ObjectDisposedException)
                {
                    return;
                }
                Interlocked.Increment(ref _received);
                if (TryUdpPayload(buffer.AsSpan(0, n), out string text))
                {
                    lock (_lock)
                    {
                        if (_payloads.Count < 100)
                        {
                            _payloads.Add(text);
                        }
                    }
                }
            }
        }

        /// <summary>Ethernet II + IPv4 (RFC 791, header checksum RFC 1071) + UDP (RFC 768, checksum 0: none) from the peer to the guest.</summary>
        private static byte[] UdpFrame(ushort sourcePort, ReadOnlySpan<byte> payload)
        {
            var frame = new byte[14 + 20 + 8 + payload.Length];
            PublicGuestMac.CopyTo(frame, 0);
            PeerMac.CopyTo(frame, 6);
            BinaryPrimitives.WriteUInt16BigEndian(frame.AsSpan(12), 0x0800);
            Span<byte> ip = frame.AsSpan(14, 20);
            ip[0] = 0x45;
            BinaryPrimitives.WriteUInt16BigEndian(ip[2..], (ushort)(20 + 8 + payload.Length));
            ip[8] = 64;
            ip[9] = 17;
            PublicPeer.TryWriteBytes(ip[12..16], out _);
            PublicGuest.TryWriteBytes(ip[16..20], out _);
            uint sum = 0;
            for (int i = 0; i < 20; i += 2)
            {
                sum += BinaryPrimitives.ReadUInt16BigEndian(ip[i..]);
            }
            while (sum > 0xFFFF)
            {
                sum = (sum & 0xFFFF) + (sum >> 16);
            }
            BinaryPrimitives.WriteUInt16BigEndian(ip[10..], (ushort)~sum);
            Span<byte> udp = frame.AsSpan(34);
            BinaryPrimitives.WriteUInt16BigEndian(udp, sourcePort);
            BinaryPrimitives.WriteUInt16BigEndian(udp[2..], GuestPort);
            BinaryPrimitives.WriteUInt16BigEndian(udp[4..], (ushort)(8 + payload.Length));
            payload.CopyTo(udp[8..]);
            return frame;
        }

        private static bool TryUdpPayload(ReadOnlySpan<byte> frame, out string text)
        {
            text = "";
            if (frame.Length < 42 || BinaryPrimitives.ReadUInt16BigEndian(frame[12..]) != 0x0800 || (frame[14] >> 4) != 4 || frame[23] != 17)
            {
                return false;
            }
            int ihl = (frame[14] & 0x0F) * 4;
            if (ihl < 20 || frame.Length < 14 + ihl + 8)
            {
                return false;
            }
            var payload = frame[(14 + ihl + 8)..];
            var sb = new StringBuilder();
            foreach (byte b in payload[..Math.Min(payload.Length, 120)])
            {
                sb.Append(b is >= 0x20 and < 0x7F ? (char)b : '.');
            }
            text = sb.ToString();
            return true;
        }

        public void Dispose()
        {
            _stopping = true;
            _sender.Dispose();
            _socket.Dispose();
            _receiver.Join(TimeSpan.FromSeconds(2));
        }
    }
}
