namespace SecureVmm.Bench;

/// <summary>
/// Counts the trusted computing base: non-blank, non-comment lines of C# under the TCB
/// folders (tcb/ and netfilter/). Build output (bin/, obj/) is not source and is skipped.
/// </summary>
public static class TcbSize
{
    public static readonly string[] TcbFolders = ["tcb", "netfilter"];

    /// <summary>Counts code lines in one C# source text: lines left after removing blank lines,
    /// `//` comments and `/* */` comments (string literals are respected so "//" in a string counts).</summary>
    public static int CountCodeLines(string source)
    {
        int count = 0;
        bool inBlock = false;
        foreach (string rawLine in source.Split('\n'))
        {
            bool hasCode = false;
            string line = rawLine;
            int i = 0;
            bool inString = false;
            while (i < line.Length)
            {
                char c = line[i];
                char next = i + 1 < line.Length ? line[i + 1] : '\0';
                if (inBlock)
                {
                    if (c == '*' && next == '/')
                    {
                        inBlock = false;
                        i += 2;
                        continue;
                    }
                    i++;
                    continue;
                }
                if (inString)
                {
                    if (c == '\\')
                    {
                        i += 2;
                        continue;
                    }
                    if (c == '"')
                    {
                        inString = false;
                    }
                    i++;
                    continue;
                }
                if (c == '/' && next == '/')
                {
                    break;
                }
                if (c == '/' && next == '*')
                {
                    inBlock = true;
                    i += 2;
                    continue;
                }
                if (c == '"')
                {
                    inString = true;
                }
                if (!char.IsWhiteSpace(c))
                {
                    hasCode = true;
                }
                i++;
            }
            if (hasCode)
            {
                count++;
            }
        }
        return count;
    }

    /// <summary>Code lines per TCB folder under the repository root.</summary>
    public static IReadOnlyList<(string Folder, int Files, int Lines)> Measure(string repoRoot)
    {
        var result = new List<(string, int, int)>();
        foreach (string folder in TcbFolders)
        {
            string dir = Path.Combine(repoRoot, folder);
            int files = 0, lines = 0;
            if (Directory.Exists(dir))
            {
                foreach (string file in Directory.EnumerateFiles(dir, "*.cs", SearchOption.AllDirectories))
                {
                    string rel = Path.GetRelativePath(dir, file).Replace('\\', '/');
                    if (rel.StartsWith("bin/", StringComparison.Ordinal) || rel.StartsWith("obj/", StringComparison.Ordinal))
                    {
                        continue;
                    }
                    files++;
                    lines += CountCodeLines(File.ReadAllText(file));
                }
            }
            result.Add((folder, files, lines));
        }
        return result;
    }

    /// <summary>Finds the repository root (the folder holding SecureVmm.sln) from a start folder.</summary>
    public static string FindRepoRoot(string start)
    {
        for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "SecureVmm.sln")))
            {
                return dir.FullName;
            }
        }
        throw new DirectoryNotFoundException($"no SecureVmm.sln above {start}");
    }

    public static int Print(string repoRoot)
    {
        var rows = Measure(repoRoot);
        Console.WriteLine("TCB size (non-blank, non-comment C# lines):");
        foreach (var (folder, files, lines) in rows)
        {
            Console.WriteLine($"  {folder + "/",-12} {files,5} files {lines,8} lines");
        }
        Console.WriteLine($"  {"total",-12} {rows.Sum(r => r.Files),5} files {rows.Sum(r => r.Lines),8} lines");
        return 0;
    }
}
