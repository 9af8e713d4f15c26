using FsCheck;
using FsCheck.Fluent;
using SecureVmm.Appliance.Audit;
using SecureVmm.Tcb.Audit;
using Xunit;
using static SecureVmm.Verification.Audit.AuditLogSurgery;

namespace SecureVmm.Verification.Audit;

/// <summary>
/// Tamper evidence of the audit log (issue 5): whatever an attacker without the audit key does to a
/// closed, signed log — flip any bit, cut it short, remove, duplicate or reorder records or blocks,
/// rewrite and re-chain it, re-sign it with another key — `verify` with the trusted key reports a
/// problem; and an untouched log always verifies with every record intact.
/// </summary>
public class AuditTamperProperties
{
    private static readonly Config Quick = Config.QuickThrowOnFailure.WithMaxTest(60);

    private static Gen<LogShape> Shapes(int minRecords = 1) =>
        from records in Gen.Choose(minRecords, 60)
        from blockRecords in Gen.Choose(1, 10)
        from checkpointEvery in Gen.Choose(0, 25)
        from seed in Gen.Choose(0, 1000)
        select new LogShape(records, blockRecords, checkpointEvery, seed);

    [Fact]
    public void UntouchedLogVerifiesAndReadsBackEveryRecord()
    {
        Check.One(Quick, Prop.ForAll(Arb.From(Shapes(0)), shape =>
        {
            byte[] log = Write(shape);
            AuditVerifyResult result = Verify(log);
            List<AuditRecord> records = result.Ok ? Records(log) : [];
            return result.Ok && result.Closed && result.Records == shape.Records && result.UnsignedTailRecords == 0
                && records.Select((r, i) => r.Sequence == (ulong)i + 1 && r.Kind == Record(shape.Seed + i).Kind && r.Value == Record(shape.Seed + i).Value).All(ok => ok);
        }));
    }

    [Fact]
    public void AnyFlippedBitIsDetected()
    {
        var cases = from shape in Shapes()
                    from position in Gen.Choose(0, int.MaxValue)
                    from bit in Gen.Choose(0, 7)
                    select (shape, position, bit);
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(300), Prop.ForAll(Arb.From(cases), c =>
        {
            byte[] log = Write(c.shape);
            int at = c.position % log.Length;
            log[at] ^= (byte)(1 << c.bit);
            return !Verify(log).Ok;
        }));
    }

    [Fact]
    public void AnyTruncationIsDetectedAndReportedAsTruncatedOnceTheHeaderIsComplete()
    {
        var cases = from shape in Shapes() from cut in Gen.Choose(0, int.MaxValue) select (shape, cut);
        Check.One(Quick, Prop.ForAll(Arb.From(cases), c =>
        {
            byte[] log = Write(c.shape);
            int length = c.cut % log.Length;
            AuditVerifyResult result = Verify(log[..length]);
            int headerLength = Split(log).Header.Length;
            return !result.Ok && (length < headerLength || (result.Problem!.Kind == AuditProblemKind.Truncated
                && result.Problem.Message.StartsWith("truncated after block", StringComparison.Ordinal)));
        }));
    }

    private enum Edit { Remove, Duplicate, Swap }

    [Fact]
    public void RemovedDuplicatedOrReorderedRecordIsDetected()
    {
        var cases = from shape in Shapes(minRecords: 2)
                    from edit in Gen.Elements(Edit.Remove, Edit.Duplicate, Edit.Swap)
                    from pick in Gen.Choose(0, int.MaxValue)
                    select (shape, edit, pick);
        Check.One(Quick, Prop.ForAll(Arb.From(cases), c =>
        {
            var (header, blocks) = Split(Write(c.shape));
            var candidates = Enumerable.Range(0, blocks.Count)
                .Where(i => IsRecordsBlock(blocks[i]) && RecordBytes(blocks[i]).Count >= (c.edit == Edit.Swap ? 2 : 1)).ToList();
            if (candidates.Count == 0)
            {
                // Blocks of one record: a swap is impossible inside a block; remove one instead.
                candidates = Enumerable.Range(0, blocks.Count).Where(i => IsRecordsBlock(blocks[i])).ToList();
                c.edit = Edit.Remove;
            }
            int b = candidates[c.pick % candidates.Count];
            List<byte[]> records = RecordBytes(blocks[b]);
            int r = c.pick / 7 % records.Count;
            switch (c.edit)
            {
                case Edit.Remove:
                    records.RemoveAt(r);
                    break;
                case Edit.Duplicate:
                    records.Insert(r, records[r]);
                    break;
                default:
                    int other = (r + 1) % records.Count;
                    (records[r], records[other]) = (records[other], records[r]);
                    break;
            }
            blocks[b] = records.Count == 0 ? [] : WithRecords(blocks[b], records);
            return !Verify(Join(header, blocks)).Ok;
        }));
    }

    [Fact]
    public void RemovedDuplicatedOrReorderedBlockIsDetected()
    {
        var cases = from shape in Shapes()
                    from edit in Gen.Elements(Edit.Remove, Edit.Duplicate, Edit.Swap)
                    from pick in Gen.Choose(0, int.MaxValue)
                    select (shape, edit, pick);
        Check.One(Quick, Prop.ForAll(Arb.From(cases), c =>
        {
            var (header, blocks) = Split(Write(c.shape));
            int b = c.pick % blocks.Count;
            switch (c.edit)
            {
                case Edit.Remove:
                    blocks.RemoveAt(b);
                    break;
                case Edit.Duplicate:
                    blocks.Insert(b, blocks[b]);
                    break;
                default:
                    int other = b + 1 < blocks.Count ? b + 1 : b - 1;
                    (blocks[b], blocks[other]) = (blocks[other], blocks[b]);
                    break;
            }
            return !Verify(Join(header, blocks)).Ok;
        }));
    }

    [Fact]
    public void RewrittenChainSignedWithAnotherKeyIsDetected()
    {
        // The strongest attacker without the key: edits the record list, then writes a brand-new,
        // internally consistent log with the same log id, signed by a key of their own — either under
        // its own id or claiming the trusted key's id.
        var cases = from shape in Shapes(minRecords: 2)
                    from edit in Gen.Elements(Edit.Remove, Edit.Duplicate, Edit.Swap)
                    from impostor in ArbMap.Default.GeneratorFor<bool>()
                    from pick in Gen.Choose(0, int.MaxValue)
                    select (shape, edit, impostor, pick);
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(40), Prop.ForAll(Arb.From(cases), c =>
        {
            List<AuditRecord> records = Records(Write(c.shape));
            int r = c.pick % records.Count;
            switch (c.edit)
            {
                case Edit.Remove:
                    records.RemoveAt(r);
                    break;
                case Edit.Duplicate:
                    records.Insert(r, records[r]);
                    break;
                default:
                    (records[r], records[(r + 1) % records.Count]) = (records[(r + 1) % records.Count], records[r]);
                    break;
            }
            IAuditSigner signer = c.impostor ? new ImpostorSigner() : new Ed25519AuditSigner(OtherKey);
            byte[] forged = Write(records, c.shape, signer);
            AuditVerifyResult unkeyed = VerifyWithoutKey(forged);
            AuditVerifyResult keyed = Verify(forged);
            AuditProblemKind expected = c.impostor ? AuditProblemKind.BadSignature : AuditProblemKind.UnknownKey;
            return keyed.Problem?.Kind == expected && unkeyed.Ok;
        }));
    }

    [Fact]
    public void ArbitraryBytesNeverCrashTheVerifier()
    {
        var cases = from shape in Shapes()
                    from garbage in ArbMap.Default.GeneratorFor<byte[]>()
                    from at in Gen.Choose(0, int.MaxValue)
                    select (shape, garbage, at);
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(200), Prop.ForAll(Arb.From(cases), c =>
        {
            byte[] log = Write(c.shape);
            int at = c.at % log.Length;
            byte[] spliced = [.. log.AsSpan(0, at), .. c.garbage, .. log.AsSpan(Math.Min(log.Length, at + c.garbage.Length))];
            AuditVerifyResult result = Verify(spliced);
            AuditVerifyResult raw = Verify(c.garbage);
            return (c.garbage.Length == 0 || spliced.AsSpan().SequenceEqual(log) || !result.Ok) && !raw.Ok;
        }));
    }
}
