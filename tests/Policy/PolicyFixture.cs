using System.Text.Json;
using SecureVmm.Policy.Policy;

namespace SecureVmm.Tests.Policy;

/// <summary>Loads the shipped example policies and checks edited copies of them.</summary>
internal static class PolicyFixture
{
    public static string RepoRoot { get; } = FindRepoRoot();

    public static string ExamplePath(string name) => Path.Combine(RepoRoot, "guests-policy", "examples", name);

    public static PolicyDocument TwoDesktops() => Load("nettop-two-desktops.json");

    public static PolicyDocument Lab() => Load("lab-udp-pcap.json");

    private static PolicyDocument Load(string name) =>
        JsonSerializer.Deserialize(File.ReadAllBytes(ExamplePath(name)), PolicyJsonContext.Default.PolicyDocument)!;

    public static byte[] Serialize(PolicyDocument doc) => JsonSerializer.SerializeToUtf8Bytes(doc, PolicyJsonContext.Default.PolicyDocument);

    /// <summary>Checks <paramref name="doc"/> as if it were the file /policies/test.json.</summary>
    public static PolicyCheckResult Check(PolicyDocument doc) => PolicyLoader.Check(Serialize(doc), "/policies/test.json", null);

    public static PolicyCheckResult Check(string json) => PolicyLoader.Check(System.Text.Encoding.UTF8.GetBytes(json), "/policies/test.json", null);

    private static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "SecureVmm.sln")))
            {
                return dir.FullName;
            }
        }
        throw new InvalidOperationException("cannot find the repository root (SecureVmm.sln) above " + AppContext.BaseDirectory);
    }
}
