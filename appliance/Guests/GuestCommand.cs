using System.CommandLine;
using SecureVmm.Policy.Guests;

namespace SecureVmm.Appliance.Guests;

/// <summary>`securevmm guest`: the project's own guest programs, written out as Multiboot images.</summary>
public static class GuestCommand
{
    public static Command Build()
    {
        var command = new Command("guest", "The project's own guest programs (Multiboot images built with Iced's assembler)");

        var list = new Command("list", "List the built-in guests");
        list.SetAction(parse =>
        {
            foreach (string name in ProjectGuests.Names)
            {
                parse.InvocationConfiguration.Output.WriteLine(name);
            }
            return Cli.ExitOk;
        });

        var name = new Argument<string>("NAME") { Description = "Guest name (see `securevmm guest list`)" };
        var output = new Option<FileInfo>("--output", "-o") { Description = "File to write the Multiboot image to", Required = true };
        var build = new Command("build", "Write a built-in guest as a Multiboot image (boots with `securevmm boot --unsigned` or `qemu-system-i386 -kernel`)")
        {
            name, output,
        };
        build.SetAction(parse =>
        {
            string guest = parse.GetValue(name)!;
            GuestImage? image = ProjectGuests.Build(guest);
            if (image is null)
            {
                parse.InvocationConfiguration.Error.WriteLine($"securevmm guest build: no guest named '{guest}'; known: {string.Join(", ", ProjectGuests.Names)}");
                return Cli.ExitUsage;
            }
            string path = parse.GetValue(output)!.FullName;
            try
            {
                File.WriteAllBytes(path, image.Bytes);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                parse.InvocationConfiguration.Error.WriteLine($"securevmm guest build: {path}: {e.Message}");
                return Cli.ExitUsage;
            }
            parse.InvocationConfiguration.Output.WriteLine($"{guest}: {image.Bytes.Length} bytes, loads at 0x{image.LoadAddress:X}, entry 0x{image.Entry:X} -> {path}");
            return Cli.ExitOk;
        });

        command.Subcommands.Add(list);
        command.Subcommands.Add(build);
        command.Subcommands.Add(BuildDebianInitramfs());
        return command;
    }

    /// <summary>Kernel modules the initramfs carries for the virtio-net NIC, in load order.</summary>
    public static readonly string[] VirtioNetModules =
    [
        "kernel/drivers/virtio/virtio.ko",
        "kernel/drivers/virtio/virtio_ring.ko",
        "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
        "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
        "kernel/drivers/virtio/virtio_pci.ko",
        "kernel/net/core/failover.ko",
        "kernel/drivers/net/net_failover.ko",
        "kernel/drivers/net/virtio_net.ko",
    ];

    /// <summary>The default Debian guest cache (guests-policy/guests/debian/fetch.sh writes it).</summary>
    public static string DefaultDebianCache =>
        Environment.GetEnvironmentVariable("SECUREVMM_GUEST_CACHE") is { Length: > 0 } cache
            ? cache
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "securevmm", "debian");

    /// <summary>Builds the Debian initramfs (busybox + the virtio-net modules) from the fetched cache.</summary>
    public static byte[] BuildDebianInitramfs(string cache)
    {
        byte[] busybox = File.ReadAllBytes(Path.Combine(cache, "busybox"));
        string version = File.ReadAllText(Path.Combine(cache, "kernel-version")).Trim();
        var modules = VirtioNetModules.Select(m => (m, File.ReadAllBytes(Path.Combine(cache, "modules", m))));
        return SecureVmm.Tcb.Boot.DebianInitramfs.Build(busybox, version, modules);
    }

    private static Command BuildDebianInitramfs()
    {
        var cache = new Option<DirectoryInfo?>("--cache") { Description = "The Debian guest cache fetched by guests-policy/guests/debian/fetch.sh (default: $SECUREVMM_GUEST_CACHE or ~/.cache/securevmm/debian)" };
        var output = new Option<FileInfo>("--output", "-o") { Description = "File to write the cpio (newc) initramfs to", Required = true };
        var command = new Command("debian-initramfs", "Build the initramfs for Debian's kernel: busybox-static, /init that mounts proc/sys/dev and runs a shell on the console, and the virtio-net modules")
        {
            cache, output,
        };
        command.SetAction(parse =>
        {
            string dir = parse.GetValue(cache)?.FullName ?? DefaultDebianCache;
            string path = parse.GetValue(output)!.FullName;
            try
            {
                byte[] cpio = BuildDebianInitramfs(dir);
                File.WriteAllBytes(path, cpio);
                parse.InvocationConfiguration.Output.WriteLine($"initramfs: {cpio.Length:N0} bytes -> {path}");
                return Cli.ExitOk;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or SecureVmm.Tcb.Boot.BootImageException)
            {
                parse.InvocationConfiguration.Error.WriteLine($"securevmm guest debian-initramfs: {e.Message} (run guests-policy/guests/debian/fetch.sh first)");
                return Cli.ExitUsage;
            }
        });
        return command;
    }
}
