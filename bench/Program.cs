using BenchmarkDotNet.Running;
using SecureVmm.Bench;

// `dotnet run -c Release --project bench -- tcb-size` prints the TCB size figure;
// anything else goes to BenchmarkDotNet's switcher (e.g. `-- --filter '*'`).
if (args.Length > 0 && args[0] == "tcb-size")
{
    return TcbSize.Print(TcbSize.FindRepoRoot(args.Length > 1 ? args[1] : Directory.GetCurrentDirectory()));
}
if (args.Length > 0 && args[0] == "x87")
{
    return X87Bench.Run(args[1..]);
}
BenchmarkSwitcher.FromAssembly(typeof(TcbSize).Assembly).Run(args);
return 0;
