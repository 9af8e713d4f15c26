using BenchmarkDotNet.Running;
using SecureVmm.Bench;

// `dotnet run -c Release --project bench -- NAME [args]` runs one benchmark that prints its figures;
// `-- tcb-size` prints the TCB size figure; anything else goes to BenchmarkDotNet's switcher.
var benchmarks = new Dictionary<string, Func<string[], int>>(StringComparer.Ordinal)
{
    ["tcb-size"] = a => TcbSize.Print(TcbSize.FindRepoRoot(a.Length > 0 ? a[0] : Directory.GetCurrentDirectory())),
    ["audit"] = AuditBench.Run,
    ["cpu"] = CpuBench.Run,
    ["devices"] = DeviceBench.Run,
    ["filter"] = FilterBench.Run,
    ["image"] = ImageBench.Run,
    ["nic"] = NicBench.Run,
    ["x87"] = X87Bench.Run,
    ["compare"] = CompareBench.Run,
    ["console"] = ConsoleBench.Run,
    ["linux"] = LinuxBench.Run,
};
if (args.Length > 0 && benchmarks.TryGetValue(args[0], out var run))
{
    return run(args[1..]);
}
if (args.Length == 0 || args[0] is "-h" or "--help")
{
    Console.WriteLine($"benchmarks: {string.Join(", ", benchmarks.Keys)} (or BenchmarkDotNet options)");
    return 0;
}
BenchmarkSwitcher.FromAssembly(typeof(TcbSize).Assembly).Run(args);
return 0;
