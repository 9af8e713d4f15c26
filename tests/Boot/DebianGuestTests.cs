using System.Text;
using SecureVmm.Tcb.Boot;
using SecureVmm.Tcb.Memory;
using Xunit;
using Xunit.Abstractions;

namespace SecureVmm.Tests.Boot;

/// <summary>
/// The real Debian guest, when guests-policy/guests/debian/fetch.sh has filled the cache
/// ($SECUREVMM_GUEST_CACHE or ~/.cache/securevmm/debian). Without the cache these tests say so
/// in their output and check nothing else.
/// </summary>
public sealed class DebianGuestTests(ITestOutputHelper output)
{
    internal static string CacheDirectory =>
        Environment.GetEnvironmentVariable("SECUREVMM_GUEST_CACHE") is { Length: > 0 } dir
            ? dir
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "securevmm", "debian");

    private bool CacheReady(out string kernel, out string busybox)
    {
        kernel = Path.Combine(CacheDirectory, "vmlinuz");
        busybox = Path.Combine(CacheDirectory, "busybox");
        if (File.Exists(kernel) && File.Exists(busybox))
        {
            return true;
        }
        output.WriteLine($"SKIPPED: no Debian guest cache at {CacheDirectory}; run guests-policy/guests/debian/fetch.sh first");
        return false;
    }

    [Fact]
    public void Debian_kernel_is_a_bzimage_the_loader_accepts_with_an_initramfs()
    {
        if (!CacheReady(out string kernelPath, out string busyboxPath))
        {
            return;
        }
        byte[] kernel = File.ReadAllBytes(kernelPath);
        Assert.Equal(BootImageKind.BzImage, BootImageDetector.Detect(kernel));
        byte[] initramfs = DebianInitramfs.Build(File.ReadAllBytes(busyboxPath));
        using var ram = new GuestRam(256L * 1024 * 1024);
        var plan = BzImageLoader.Load(ram, kernel, "console=ttyS0 earlyprintk=serial", initramfs);
        output.WriteLine($"{plan.Format}: {kernel.Length} bytes kernel, {initramfs.Length} bytes initramfs, entry 0x{plan.EntryEip:X}");
        foreach (var region in plan.Regions)
        {
            output.WriteLine($"  0x{region.Start:X8} +0x{region.Length:X}  {region.What}");
        }
        Assert.Equal(0x100000u, plan.EntryEip);
        Assert.Contains(plan.Regions, r => r.What == "initrd");
    }

    [Fact]
    public void Debian_initramfs_has_init_console_busybox_and_applet_links()
    {
        if (!CacheReady(out _, out string busyboxPath))
        {
            return;
        }
        byte[] busybox = File.ReadAllBytes(busyboxPath);
        string kernelVersion = File.ReadAllText(Path.Combine(CacheDirectory, "kernel-version")).Trim();
        string virtioNet = Path.Combine(CacheDirectory, "modules", "kernel", "drivers", "net", "virtio_net.ko");
        var modules = File.Exists(virtioNet) ? [("kernel/drivers/net/virtio_net.ko", File.ReadAllBytes(virtioNet))] : Array.Empty<(string, byte[])>();
        var entries = CpioNewcReader.Read(DebianInitramfs.Build(busybox, kernelVersion, modules));
        var byPath = entries.ToDictionary(e => e.Path);
        Assert.Equal(busybox, byPath["bin/busybox"].Data);
        Assert.Equal(CpioEntryType.CharDevice, byPath["dev/console"].Type);
        Assert.Equal((5u, 1u), (byPath["dev/console"].DevMajor, byPath["dev/console"].DevMinor));
        Assert.Equal("busybox", Encoding.UTF8.GetString(byPath["bin/sh"].Data));
        string init = Encoding.ASCII.GetString(byPath["init"].Data);
        Assert.StartsWith("#!/bin/sh", init, StringComparison.Ordinal);
        Assert.Contains("mount -t proc", init, StringComparison.Ordinal);
        Assert.Contains("devtmpfs", init, StringComparison.Ordinal);
        Assert.Equal(0x1EDu, byPath["init"].Permissions);
        if (modules.Length > 0)
        {
            Assert.True(byPath.ContainsKey($"lib/modules/{kernelVersion}/kernel/drivers/net/virtio_net.ko"));
        }
        output.WriteLine($"initramfs: {entries.Count} entries, modules: {modules.Length} (kernel {kernelVersion})");
    }

    [Fact]
    public void Initramfs_builder_refuses_a_busybox_that_is_not_elf()
    {
        Assert.Equal(0, Assert.Throws<BootImageException>(() => DebianInitramfs.Build([1, 2, 3, 4])).Offset);
    }
}
