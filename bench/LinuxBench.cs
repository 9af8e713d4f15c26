using SecureVmm.Appliance.Guests;

namespace SecureVmm.Bench;

/// <summary>
/// The Debian boot alone, in-process, for profiling the boot workload without the QEMU side:
/// kernel + busybox initramfs from the guest cache to the shell prompt on the serial port
/// (256 MiB, deterministic clock), the same run as the Debian row of <c>compare</c>.
/// Run: <c>dotnet run -c Release --project bench -- linux [runs]</c>.
/// </summary>
public static class LinuxBench
{
    public static int Run(string[] args)
    {
        int runs = args.Length > 0 && int.TryParse(args[0], out int n) && n > 0 ? n : 1;
        string cache = GuestCommand.DefaultDebianCache;
        if (!File.Exists(Path.Combine(cache, "vmlinuz")) || !File.Exists(Path.Combine(cache, "busybox")))
        {
            Console.WriteLine($"linux: skipped, the Debian guest is not in {cache} (run guests-policy/guests/debian/fetch.sh)");
            return 0;
        }
        byte[] kernel = File.ReadAllBytes(Path.Combine(cache, "vmlinuz"));
        byte[] initrd = GuestCommand.BuildDebianInitramfs(cache);
        for (int r = 0; r < runs; r++)
        {
            var (seconds, instructions) = CompareBench.LinuxInProcess(kernel, initrd);
            Console.WriteLine($"  run {r + 1}: Debian boot to the prompt in {seconds:F1} s, {instructions:N0} guest instructions = {instructions / seconds / 1e6:F1} million guest instr/s");
        }
        return 0;
    }
}
