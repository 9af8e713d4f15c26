using System.Text;

namespace SecureVmm.Tcb.Boot;

/// <summary>
/// Builds the initramfs for the Debian guest in C#: a busybox-static binary with symlinks for its
/// common applets, /dev/console (c 5 1) so the kernel can open the console before devtmpfs is
/// mounted, the directories the init script mounts on, optionally kernel modules, and /init, a
/// shell script that mounts proc, sys and devtmpfs and then runs a shell on the console.
/// </summary>
public static class DebianInitramfs
{
    /// <summary>Applets linked at build time; /init also runs "busybox --install -s" for the rest.</summary>
    public static readonly string[] Applets =
    [
        "sh", "ash", "cat", "ls", "mount", "umount", "mkdir", "echo", "dmesg", "uname", "poweroff", "reboot",
        "halt", "ps", "grep", "head", "tail", "cp", "mv", "rm", "ln", "sleep", "setsid", "cttyhack", "mknod",
        "insmod", "modprobe", "lsmod", "ip", "ifconfig", "ping", "wc", "sed", "awk", "vi", "clear", "stty",
        "hostname", "sync", "date", "free", "df", "true", "false", "test", "[", "env", "id", "kill",
    ];

    /// <summary>The /init script. The prompt text is fixed so tests can wait for it.</summary>
    public const string InitScript =
        "#!/bin/sh\n" +
        "# SecureVmm Debian guest init: mount the kernel file systems, then a shell on the console.\n" +
        "/bin/busybox mount -t proc proc /proc\n" +
        "/bin/busybox mount -t sysfs sysfs /sys\n" +
        "/bin/busybox mount -t devtmpfs devtmpfs /dev\n" +
        "/bin/busybox --install -s /bin\n" +
        "/bin/busybox hostname -F /etc/hostname\n" +
        "export PATH=/bin:/sbin:/usr/bin:/usr/sbin\n" +
        "export PS1='securevmm# '\n" +
        "echo 'SecureVmm Debian guest: busybox shell'\n" +
        "exec setsid cttyhack sh\n";

    /// <summary>
    /// The archive. <paramref name="modules"/> are (path under lib/modules/&lt;version&gt;, bytes)
    /// pairs, e.g. ("kernel/drivers/net/virtio_net.ko", ...).
    /// </summary>
    public static byte[] Build(byte[] busybox, string? kernelVersion = null, IEnumerable<(string Path, byte[] Data)>? modules = null)
    {
        ArgumentNullException.ThrowIfNull(busybox);
        if (busybox.Length < 4 || busybox[0] != 0x7F || busybox[1] != (byte)'E' || busybox[2] != (byte)'L' || busybox[3] != (byte)'F')
        {
            throw new BootImageException(0, "busybox: not an ELF executable");
        }
        var cpio = new CpioNewcWriter();
        foreach (string dir in (string[])["bin", "sbin", "dev", "etc", "proc", "sys", "tmp", "root", "usr", "usr/bin", "usr/sbin", "lib"])
        {
            cpio.AddDirectory(dir, CpioNewcWriter.Octal(dir == "tmp" ? 1777u : 755u));
        }
        cpio.AddCharDevice("dev/console", 5, 1, CpioNewcWriter.Octal(600));
        cpio.AddCharDevice("dev/null", 1, 3, CpioNewcWriter.Octal(666));
        cpio.AddCharDevice("dev/ttyS0", 4, 64, CpioNewcWriter.Octal(660));
        cpio.AddFile("bin/busybox", busybox, CpioNewcWriter.Octal(755));
        foreach (string applet in Applets)
        {
            cpio.AddSymlink("bin/" + applet, "busybox");
        }
        cpio.AddFile("init", Encoding.ASCII.GetBytes(InitScript), CpioNewcWriter.Octal(755));
        cpio.AddFile("etc/hostname", "securevmm-debian\n"u8.ToArray(), CpioNewcWriter.Octal(644));
        if (modules is not null && kernelVersion is not null)
        {
            string root = "lib/modules/" + kernelVersion;
            foreach (var (path, data) in modules)
            {
                AddWithParents(cpio, root + "/" + path.Trim('/'), data);
            }
        }
        return cpio.ToArray();
    }

    private static void AddWithParents(CpioNewcWriter cpio, string path, byte[] data)
    {
        var parts = path.Split('/');
        for (int i = 1; i < parts.Length; i++)
        {
            string dir = string.Join('/', parts[..i]);
            if (!cpio.Contains(dir))
            {
                cpio.AddDirectory(dir);
            }
        }
        cpio.AddFile(path, data, CpioNewcWriter.Octal(644));
    }
}
