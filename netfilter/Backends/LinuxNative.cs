using System.Runtime.InteropServices;

namespace SecureVmm.NetFilter.Backends;

/// <summary>
/// The few libc calls the TAP backend needs (open, ioctl, read, write, poll, eventfd, close),
/// with blittable arguments only so no unsafe code is needed. Constants are Linux x86-64/arm64
/// values from the kernel UAPI headers named next to each.
/// </summary>
internal static class LinuxNative
{
    private const string Libc = "libc";

    // <asm-generic/fcntl.h>
    public const int O_RDWR = 0x2;
    public const int O_NONBLOCK = 0x800;
    public const int O_CLOEXEC = 0x80000;

    // <sys/eventfd.h>
    public const int EFD_NONBLOCK = 0x800;
    public const int EFD_CLOEXEC = 0x80000;

    // <asm-generic/poll.h>
    public const short POLLIN = 0x1;
    public const short POLLERR = 0x8;
    public const short POLLHUP = 0x10;
    public const short POLLNVAL = 0x20;

    // <asm-generic/errno-base.h>
    public const int EINTR = 4;
    public const int EAGAIN = 11;

    // <linux/if_tun.h>: TUNSETIFF = _IOW('T', 202, int); IFF_TAP, IFF_NO_PI.
    public const uint TUNSETIFF = 0x400454CA;
    public const short IFF_TAP = 0x0002;
    public const short IFF_NO_PI = 0x1000;

    // <net/if.h>: IFNAMSIZ; struct ifreq is 40 bytes on 64-bit Linux (name[16] + a 24-byte union).
    public const int IFNAMSIZ = 16;
    public const int IfReqSize = 40;

    [StructLayout(LayoutKind.Sequential)]
    public struct PollFd
    {
        public int Fd;
        public short Events;
        public short REvents;
    }

    [DllImport(Libc, EntryPoint = "open", SetLastError = true)]
    public static extern int Open(byte[] pathNulTerminated, int flags);

    [DllImport(Libc, EntryPoint = "ioctl", SetLastError = true)]
    public static extern int Ioctl(int fd, nuint request, byte[] argument);

    [DllImport(Libc, EntryPoint = "read", SetLastError = true)]
    public static extern nint Read(int fd, byte[] buffer, nint count);

    [DllImport(Libc, EntryPoint = "write", SetLastError = true)]
    public static extern nint Write(int fd, ref byte buffer, nint count);

    [DllImport(Libc, EntryPoint = "poll", SetLastError = true)]
    public static extern int Poll([In, Out] PollFd[] fds, nuint count, int timeoutMilliseconds);

    [DllImport(Libc, EntryPoint = "eventfd", SetLastError = true)]
    public static extern int EventFd(uint initialValue, int flags);

    [DllImport(Libc, EntryPoint = "close", SetLastError = true)]
    public static extern int Close(int fd);

    [DllImport(Libc, EntryPoint = "strerror")]
    private static extern nint StrError(int errno);

    public static int LastError => Marshal.GetLastPInvokeError();

    public static string Describe(int errno)
    {
        string? text = Marshal.PtrToStringUTF8(StrError(errno));
        return $"{text ?? "error"} (errno {errno})";
    }
}

/// <summary>
/// A file descriptor as a SafeHandle: a send racing with Dispose holds a reference, so the
/// descriptor is closed only after the last in-flight call returns and its number can never be
/// reused under us (which could otherwise send a frame to some other descriptor).
/// </summary>
internal sealed class FileDescriptorHandle : SafeHandle
{
    public FileDescriptorHandle(int fd)
        : base(new IntPtr(-1), ownsHandle: true) => SetHandle(new IntPtr(fd));

    public override bool IsInvalid => handle.ToInt64() < 0;

    /// <summary>The descriptor number; only valid between DangerousAddRef and DangerousRelease.</summary>
    public int Fd => (int)handle.ToInt64();

    protected override bool ReleaseHandle() => LinuxNative.Close((int)handle.ToInt64()) == 0;
}
