using SecureVmm.Policy.Policy;
using Xunit;

namespace SecureVmm.Tests.Policy;

public class PolicyValidatorTests
{
    [Theory]
    [InlineData("nettop-two-desktops.json", 2)]
    [InlineData("lab-udp-pcap.json", 2)]
    public void ShippedExamplesAreValid(string name, int vms)
    {
        var result = PolicyLoader.Check(File.ReadAllBytes(PolicyFixture.ExamplePath(name)), name, null);
        Assert.True(result.Policy is not null, string.Join("\n", result.Problems));
        Assert.Equal(vms, result.Policy.Vms.Length);
    }

    [Fact]
    public void ValidatedPolicyResolvesReferencesAndPaths()
    {
        var result = PolicyFixture.Check(PolicyFixture.Lab());
        var policy = Assert.IsType<ValidatedPolicy>(result.Policy);
        var echo = policy.Vm("echo");
        Assert.Equal("echo-link", echo.Network.Name);
        var udp = Assert.IsType<UdpBackend>(echo.Network.Backend);
        Assert.Equal(40000, udp.Local.Port);
        Assert.Equal(40001, udp.Remote.Port);
        Assert.Equal(0x02_00_00_00_10_01UL, echo.Network.MacAddress);
        Assert.Equal("/policies/audit/echo.audit", echo.Audit.Path);
        Assert.Equal("/policies/state/rollback-state.json", policy.RollbackStateFile);
        Assert.Equal(ClockMode.Deterministic, echo.Clock);
        Assert.Equal("lab", Assert.Single(echo.Image.Signers).Id);
        var kiosk = policy.Vm("kiosk");
        Assert.True(kiosk.Image.Sealed);
        Assert.Equal("/policies/captures/kiosk.pcap", Assert.IsType<PcapBackend>(kiosk.Network.Backend).FilePath);
        var rule = Assert.Single(echo.Network.Filter.Rules);
        Assert.Equal(FilterDirection.In, rule.Direction);
        Assert.Equal((ushort)0x86DD, rule.EtherType);
        Assert.Equal(FilterAction.Allow, echo.Network.Filter.DefaultAction);
        Assert.Equal(FilterAction.Deny, kiosk.Network.Filter.DefaultAction); // no filter: deny by default
        Assert.Equal(64, policy.Sha256.Length);
    }

    public static TheoryData<string> RuleCases => new(PolicyMutations.All.Keys);

    /// <summary>Each rule, broken once in an otherwise valid policy, gives its own problem at the right JSON path.</summary>
    [Theory]
    [MemberData(nameof(RuleCases))]
    public void EachBrokenRuleIsReportedWithItsPath(string name)
    {
        var mutation = PolicyMutations.All[name];
        var doc = PolicyFixture.TwoDesktops();
        mutation.Apply(doc);
        var result = PolicyFixture.Check(doc);
        Assert.Null(result.Policy);
        var problem = result.Problems.FirstOrDefault(p => p.Rule == mutation.Rule && p.JsonPath == mutation.Path);
        Assert.True(problem is not null, $"expected {mutation.Rule} at {mutation.Path}; got:\n{string.Join("\n", result.Problems.Select(p => $"{p.Rule} {p}"))}");
        Assert.StartsWith("/policies/test.json:", problem.ToString(), StringComparison.Ordinal);
        Assert.True(problem.Line > 1, "the problem names a line inside the document");
    }

    [Fact]
    public void EveryProblemIsReportedAtOnce()
    {
        var doc = PolicyFixture.TwoDesktops();
        foreach (var name in new[] { "duplicate-mac", "unsupported-device", "memory-over-budget", "label-mismatch", "shared-tap" })
        {
            PolicyMutations.All[name].Apply(doc);
        }
        var rules = PolicyFixture.Check(doc).Problems.Select(p => p.Rule).ToHashSet();
        Assert.Superset(new HashSet<PolicyRule>
        {
            PolicyRule.DuplicateMacAddress, PolicyRule.UnsupportedDevice, PolicyRule.MemoryBudget,
            PolicyRule.LabelMismatch, PolicyRule.SharedHostResource,
        }, rules);
    }

    [Fact]
    public void UnknownFieldsAreReportedWithLineAndColumnAlongsideOtherProblems()
    {
        string json = File.ReadAllText(PolicyFixture.ExamplePath("nettop-two-desktops.json"))
            .Replace("\"memoryMiB\": 1024,", "\"memoryMiB\": 1024, \"memroy\": 1,", StringComparison.Ordinal)
            .Replace("\"clock\": \"realtime\"", "\"clock\": \"wallclock\"", StringComparison.Ordinal);
        var result = PolicyFixture.Check(json);
        Assert.Null(result.Policy);
        var unknown = result.Problems.Where(p => p.Rule == PolicyRule.UnknownField).ToList();
        Assert.Equal(2, unknown.Count);
        Assert.Equal("$.vms[0].memroy", unknown[0].JsonPath);
        Assert.Contains("memoryMiB", unknown[0].Message, StringComparison.Ordinal); // lists what was expected
        Assert.Equal(77, unknown[0].Line); // the line of vms[0].memoryMiB in the example
        Assert.Contains(result.Problems, p => p.Rule == PolicyRule.BadValue && p.JsonPath == "$.vms[1].clock");
    }

    [Theory]
    [InlineData("{\"formatVersion\": 1, \"formatVersion\": 1}", PolicyRule.DuplicateProperty, "$.formatVersion")]
    [InlineData("{\"formatVersion\": \"1\"}", PolicyRule.WrongType, "$.formatVersion")]
    [InlineData("{\"formatVersion\": 1, \"vms\": {}}", PolicyRule.WrongType, "$.vms")]
    [InlineData("{\"formatVersion\": 1,}", PolicyRule.MalformedJson, "$")]
    [InlineData("{\"formatVersion\": 1 /* no comments */}", PolicyRule.MalformedJson, "$")]
    [InlineData("{\"formatVersion\": 1} {}", PolicyRule.MalformedJson, "$")]
    [InlineData("", PolicyRule.MalformedJson, "$")]
    [InlineData("[1, 2]", PolicyRule.WrongType, "$")]
    [InlineData("{\"formatVersion\": 99999999999}", PolicyRule.WrongType, "$.formatVersion")]
    public void StructuralErrorsAreRejected(string json, PolicyRule rule, string path)
    {
        var result = PolicyFixture.Check(json);
        Assert.Null(result.Policy);
        Assert.Contains(result.Problems, p => p.Rule == rule && p.JsonPath == path);
    }

    [Fact]
    public void MissingTopLevelFieldsAreAllNamed()
    {
        var result = PolicyFixture.Check("{}");
        var paths = result.Problems.Where(p => p.Rule == PolicyRule.MissingField).Select(p => p.JsonPath).ToHashSet();
        Assert.Superset(new HashSet<string> { "$.formatVersion", "$.appliance", "$.vms", "$.networks", "$.trustAnchors" }, paths);
    }

    [Fact]
    public void TooLargePolicyIsRefusedBeforeParsing()
    {
        var bytes = new byte[PolicyLoader.MaxPolicyBytes + 1];
        var result = PolicyLoader.Check(bytes, "big.json", null);
        Assert.Contains("at most", Assert.Single(result.Problems).Message, StringComparison.Ordinal);
    }
}

public class PolicyEncodingTests
{
    [Fact]
    public void InvalidUtf8IsAMalformedJsonProblemWithAPosition()
    {
        byte[] bytes = "{\n  \"appliance\": \"ab\"}"u8.ToArray();
        bytes[17] = 0xC0; // not a valid UTF-8 lead byte
        var result = PolicyLoader.Check(bytes, "p.json", null);
        var problem = Assert.Single(result.Problems);
        Assert.Equal(PolicyRule.MalformedJson, problem.Rule);
        Assert.Equal(2, problem.Line);
        Assert.Contains("UTF-8", problem.Message, StringComparison.Ordinal);
    }
}
