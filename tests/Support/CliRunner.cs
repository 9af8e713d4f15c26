using SecureVmm.Appliance;

namespace SecureVmm.Tests.Support;

/// <summary>
/// Runs the `securevmm` command in-process with stdout and stderr captured. The console is
/// process-wide, so test classes that use this belong to the "PolicyConsole" collection (never in
/// parallel with each other).
/// </summary>
public static class CliRunner
{
    public static (int Status, string Out, string Err) Run(params string[] args)
    {
        var oldOut = Console.Out;
        var oldErr = Console.Error;
        using var o = new StringWriter();
        using var e = new StringWriter();
        Console.SetOut(o);
        Console.SetError(e);
        try
        {
            int status = Cli.Run(args);
            return (status, o.ToString(), e.ToString());
        }
        finally
        {
            Console.SetOut(oldOut);
            Console.SetError(oldErr);
        }
    }
}
