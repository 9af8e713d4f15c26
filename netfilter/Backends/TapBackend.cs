using System.Diagnostics;
using System.Text;

namespace SecureVmm.NetFilter.Backends;

/// <summary>Where a TAP device is attached on the host.</summary>
/// <param name="Name">Interface name (at most 15 characters); null lets the kernel pick tapN.</param>
/// <param name="Bridge">Bridge to enslave the device to, or null. The bridge must already exist in the
/// namespace the device ends up in (the initial one, or <paramref name="NetworkNamespace"/>).</param>
/// <param name="NetworkNamespace">Named network namespace (as `ip netns` knows it) to move the device into, or null.</param>
public sealed record TapOptions(string? Name = null, string? Bridge = null, string? NetworkNamespace = null);

/// <summary>
/// A Linux TAP device (Documentation/networking/tuntap.rst): /dev/net/tun opened and bound with
/// TUNSETIFF to a new interface in IFF_TAP | IFF_NO_PI mode, so each read or write is exactly one
/// Ethernet frame with no extra header. Needs CAP_NET_ADMIN. The device lives as long as the file
/// descriptor; it can be moved into another network namespace while the descriptor stays here and
/// keeps working. Link set-up (up, master, netns) is done by running iproute2's `ip`.
/// </summary>
public sealed class TapBackend : INetworkBackend
{
    private const int PollTimeoutMilliseconds = 1000;

    private readonly FileDescriptorHandle _tap;
    private readonly FileDescriptorHandle _wake;
    private readonly byte[] _receiveBuffer = new byte[FilterConfig.AbsoluteMaxFrameBytes];
    private Thread? _receiver;
    private volatile bool _stopping;
    private int _disposed;
    private long _sendErrors;
    private long _receiveErrors;

    private TapBackend(int fd, int wakeFd, string name, TapOptions options)
    {
        _tap = new FileDescriptorHandle(fd);
        _wake = new FileDescriptorHandle(wakeFd);
        Name = name;
        Options = options;
    }

    /// <summary>The interface name the kernel gave the device.</summary>
    public string Name { get; }

    public TapOptions Options { get; }

    public string Description => Options switch
    {
        { NetworkNamespace: { } ns, Bridge: { } br } => $"tap {Name} on bridge {br} in netns {ns}",
        { NetworkNamespace: { } ns } => $"tap {Name} in netns {ns}",
        { Bridge: { } br } => $"tap {Name} on bridge {br}",
        _ => $"tap {Name}",
    };

    public long SendErrors => Interlocked.Read(ref _sendErrors);

    public long ReceiveErrors => Interlocked.Read(ref _receiveErrors);

    /// <summary>Why TAP devices cannot be made here, or null when they can (root and /dev/net/tun present).</summary>
    public static string? UnavailableReason()
    {
        if (!OperatingSystem.IsLinux())
        {
            return "TAP devices need Linux";
        }
        if (!File.Exists("/dev/net/tun"))
        {
            return "/dev/net/tun is missing";
        }
        if (!IsRoot())
        {
            return "creating TAP devices needs root (CAP_NET_ADMIN)";
        }
        return null;
    }

    private static bool IsRoot()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/self/status"))
            {
                if (line.StartsWith("Uid:", StringComparison.Ordinal))
                {
                    var fields = line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
                    return fields.Length > 2 && fields[2] == "0";
                }
            }
        }
        catch (IOException)
        {
        }
        return false;
    }

    /// <summary>Creates the device, brings it up and attaches it as <paramref name="options"/> say.</summary>
    public static TapBackend Create(TapOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (!OperatingSystem.IsLinux())
        {
            throw new NetworkBackendException("tap backend: TAP devices need Linux");
        }
        if (options.Name is { } n && !IsValidInterfaceName(n))
        {
            throw new NetworkBackendException($"tap backend: interface name '{n}' must be 1-15 characters of letters, digits, '-', '_' or '.'");
        }
        if (options.Bridge is { } b && !IsValidInterfaceName(b))
        {
            throw new NetworkBackendException($"tap backend: bridge name '{b}' must be 1-15 characters of letters, digits, '-', '_' or '.'");
        }
        if (options.NetworkNamespace is { } ns && !IsValidNamespaceName(ns))
        {
            throw new NetworkBackendException($"tap backend: namespace name '{ns}' must be letters, digits, '-', '_' or '.'");
        }

        int fd = LinuxNative.Open(Encoding.ASCII.GetBytes("/dev/net/tun\0"), LinuxNative.O_RDWR | LinuxNative.O_CLOEXEC | LinuxNative.O_NONBLOCK);
        if (fd < 0)
        {
            throw new NetworkBackendException($"tap backend: cannot open /dev/net/tun: {LinuxNative.Describe(LinuxNative.LastError)}");
        }
        int wakeFd = -1;
        bool handedOver = false;
        try
        {
            var ifreq = new byte[LinuxNative.IfReqSize];
            if (options.Name is { } name)
            {
                Encoding.ASCII.GetBytes(name, ifreq);
            }
            BitConverter.TryWriteBytes(ifreq.AsSpan(LinuxNative.IFNAMSIZ), (short)(LinuxNative.IFF_TAP | LinuxNative.IFF_NO_PI));
            if (LinuxNative.Ioctl(fd, LinuxNative.TUNSETIFF, ifreq) < 0)
            {
                throw new NetworkBackendException($"tap backend: TUNSETIFF {options.Name ?? "(kernel-chosen name)"} failed: {LinuxNative.Describe(LinuxNative.LastError)}");
            }
            int nameLength = Array.IndexOf(ifreq, (byte)0, 0, LinuxNative.IFNAMSIZ);
            string actual = Encoding.ASCII.GetString(ifreq, 0, nameLength < 0 ? LinuxNative.IFNAMSIZ : nameLength);

            wakeFd = LinuxNative.EventFd(0, LinuxNative.EFD_CLOEXEC | LinuxNative.EFD_NONBLOCK);
            if (wakeFd < 0)
            {
                throw new NetworkBackendException($"tap backend: eventfd failed: {LinuxNative.Describe(LinuxNative.LastError)}");
            }
            var backend = new TapBackend(fd, wakeFd, actual, options);
            handedOver = true;
            try
            {
                backend.Attach();
            }
            catch
            {
                backend.Dispose();
                throw;
            }
            return backend;
        }
        catch
        {
            // Once the backend owns the descriptors, its Dispose has closed them.
            if (!handedOver)
            {
                if (wakeFd >= 0)
                {
                    _ = LinuxNative.Close(wakeFd);
                }
                _ = LinuxNative.Close(fd);
            }
            throw;
        }
    }

    private void Attach()
    {
        // `ip -n NS ...` runs the command inside the named namespace; without it, in ours.
        string[] scope = [];
        if (Options.NetworkNamespace is { } ns)
        {
            RunIp("link", "set", "dev", Name, "netns", ns);
            scope = ["-n", ns];
        }
        if (Options.Bridge is { } bridge)
        {
            RunIp([.. scope, "link", "set", "dev", Name, "master", bridge]);
        }
        RunIp([.. scope, "link", "set", "dev", Name, "up"]);
    }

    /// <summary>Runs iproute2's `ip` with the given arguments; a failure names the command and ip's message.</summary>
    public static void RunIp(params string[] arguments)
    {
        ArgumentNullException.ThrowIfNull(arguments);
        var start = new ProcessStartInfo("ip")
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
            UseShellExecute = false,
        };
        foreach (var a in arguments)
        {
            start.ArgumentList.Add(a);
        }
        string command = "ip " + string.Join(' ', arguments);
        try
        {
            using var process = Process.Start(start) ?? throw new NetworkBackendException($"tap backend: could not start `{command}`");
            var stderr = process.StandardError.ReadToEndAsync();
            _ = process.StandardOutput.ReadToEnd();
            if (!process.WaitForExit(30_000))
            {
                process.Kill();
                throw new NetworkBackendException($"tap backend: `{command}` did not finish in 30 s");
            }
            if (process.ExitCode != 0)
            {
                throw new NetworkBackendException($"tap backend: `{command}` failed (exit {process.ExitCode}): {stderr.Result.Trim()}");
            }
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new NetworkBackendException($"tap backend: cannot run `ip` (install iproute2): {e.Message}", e);
        }
    }

    private static bool IsValidInterfaceName(string name) =>
        name.Length is > 0 and < LinuxNative.IFNAMSIZ && name is not ("." or "..") && name.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.');

    private static bool IsValidNamespaceName(string name) =>
        name.Length is > 0 and <= 64 && name is not ("." or "..") && name.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.');

    public void Send(ReadOnlySpan<byte> frame)
    {
        if (frame.IsEmpty)
        {
            Interlocked.Increment(ref _sendErrors);
            return;
        }
        bool referenced = false;
        try
        {
            _tap.DangerousAddRef(ref referenced);
            while (true)
            {
                nint written = LinuxNative.Write(_tap.Fd, ref System.Runtime.InteropServices.MemoryMarshal.GetReference(frame), frame.Length);
                if (written == frame.Length)
                {
                    return;
                }
                if (written < 0 && LinuxNative.LastError == LinuxNative.EINTR)
                {
                    continue;
                }
                // EIO while the link is down, EAGAIN when the queue is full: the frame is lost, as on a wire.
                Interlocked.Increment(ref _sendErrors);
                return;
            }
        }
        catch (ObjectDisposedException)
        {
            Interlocked.Increment(ref _sendErrors);
        }
        finally
        {
            if (referenced)
            {
                _tap.DangerousRelease();
            }
        }
    }

    public void Start(FrameHandler onReceive)
    {
        ArgumentNullException.ThrowIfNull(onReceive);
        if (_receiver is not null)
        {
            throw new InvalidOperationException("tap backend already started");
        }
        _receiver = new Thread(() => ReceiveLoop(onReceive)) { IsBackground = true, Name = "tap backend " + Name };
        _receiver.Start();
    }

    private void ReceiveLoop(FrameHandler onReceive)
    {
        // Hold both descriptors for the life of the loop; Dispose joins this thread before they close.
        bool tapReferenced = false;
        bool wakeReferenced = false;
        try
        {
            _tap.DangerousAddRef(ref tapReferenced);
            _wake.DangerousAddRef(ref wakeReferenced);
            PollAndRead(onReceive);
        }
        catch (ObjectDisposedException)
        {
        }
        finally
        {
            if (tapReferenced)
            {
                _tap.DangerousRelease();
            }
            if (wakeReferenced)
            {
                _wake.DangerousRelease();
            }
        }
    }

    private void PollAndRead(FrameHandler onReceive)
    {
        var fds = new LinuxNative.PollFd[]
        {
            new() { Fd = _tap.Fd, Events = LinuxNative.POLLIN },
            new() { Fd = _wake.Fd, Events = LinuxNative.POLLIN },
        };
        while (!_stopping)
        {
            fds[0].REvents = 0;
            fds[1].REvents = 0;
            int ready = LinuxNative.Poll(fds, 2, PollTimeoutMilliseconds);
            if (ready < 0)
            {
                if (LinuxNative.LastError == LinuxNative.EINTR)
                {
                    continue;
                }
                Interlocked.Increment(ref _receiveErrors);
                return;
            }
            if (_stopping || fds[1].REvents != 0)
            {
                return;
            }
            if ((fds[0].REvents & (LinuxNative.POLLERR | LinuxNative.POLLHUP | LinuxNative.POLLNVAL)) != 0)
            {
                Interlocked.Increment(ref _receiveErrors);
                return;
            }
            if ((fds[0].REvents & LinuxNative.POLLIN) == 0)
            {
                continue;
            }
            // Drain what is queued; the descriptor is non-blocking, so EAGAIN ends the batch.
            while (!_stopping)
            {
                nint length = LinuxNative.Read(_tap.Fd, _receiveBuffer, _receiveBuffer.Length);
                if (length < 0)
                {
                    int errno = LinuxNative.LastError;
                    if (errno == LinuxNative.EINTR)
                    {
                        continue;
                    }
                    if (errno != LinuxNative.EAGAIN)
                    {
                        Interlocked.Increment(ref _receiveErrors);
                    }
                    break;
                }
                onReceive(_receiveBuffer.AsSpan(0, (int)length));
            }
        }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        _stopping = true;
        if (_receiver is not null)
        {
            var one = BitConverter.GetBytes(1UL);
            bool referenced = false;
            try
            {
                _wake.DangerousAddRef(ref referenced);
                _ = LinuxNative.Write(_wake.Fd, ref one[0], one.Length);
            }
            finally
            {
                if (referenced)
                {
                    _wake.DangerousRelease();
                }
            }
            if (_receiver != Thread.CurrentThread)
            {
                _receiver.Join();
            }
        }
        // Closing the last descriptor destroys the (non-persistent) device, wherever its namespace;
        // a Send still in flight keeps it open until that call returns.
        _tap.Dispose();
        _wake.Dispose();
    }
}
