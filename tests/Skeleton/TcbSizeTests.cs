using SecureVmm.Bench;
using Xunit;
using Xunit.Abstractions;

namespace SecureVmm.Tests.Skeleton;

public class TcbSizeTests(ITestOutputHelper output)
{
    [Fact]
    public void CountsOnlyCodeLines()
    {
        const string source = """
            // a line comment
            namespace X;

            /* a block
               comment */ class A { }
            class B { string s = "// not a comment"; } // trailing
               /* only comment */
            """;
        Assert.Equal(3, TcbSize.CountCodeLines(source));
    }

    [Fact]
    public void MeasuresTheRealTcbAndPrintsIt()
    {
        string root = TcbSize.FindRepoRoot(AppContext.BaseDirectory);
        var rows = TcbSize.Measure(root);
        Assert.Equal(["tcb", "netfilter"], rows.Select(r => r.Folder));
        Assert.All(rows, r => Assert.True(r.Files > 0 && r.Lines > 0, $"{r.Folder}/ has code"));
        foreach (var (folder, files, lines) in rows)
        {
            output.WriteLine($"{folder}/: {files} files, {lines} lines");
        }
    }
}
