using System.Diagnostics;
using Iced.Intel;
using SecureVmm.Tcb.Cpu.X87;
using static Iced.Intel.AssemblerRegisters;

namespace SecureVmm.Bench;

/// <summary>
/// x87 throughput: the 80-bit arithmetic core (operations per second) and whole instructions
/// through <see cref="X87Unit.Execute"/>, with the bytes allocated per instruction (target: 0).
/// Run: <c>dotnet run -c Release --project bench -- x87</c>
/// </summary>
public static class X87Bench
{
    private sealed class FlatMemory : IX87Memory
    {
        public readonly byte[] Bytes = new byte[16];
        public bool Read(int offset, Span<byte> dest) { Bytes.AsSpan(offset, dest.Length).CopyTo(dest); return true; }
        public bool Write(int offset, ReadOnlySpan<byte> src) { src.CopyTo(Bytes.AsSpan(offset)); return true; }
    }

    public static int Run(string[] args)
    {
        var random = new Random(1);
        var values = new Float80[1024];
        for (int i = 0; i < values.Length; i++)
        {
            values[i] = Float80.FromDouble((random.NextDouble() + 0.5) * Math.Pow(2, random.Next(-60, 60)));
        }
        Console.WriteLine("x87 arithmetic core (extended precision, round to nearest):");
        // Baseline through the same harness (host double add), so figures taken on a loaded machine can be compared.
        Measure("baseline", values, static (Float80 a, Float80 b, ref X87Arithmetic e) =>
            new Float80(a.SignExponent, (ulong)BitConverter.DoubleToInt64Bits(BitConverter.Int64BitsToDouble((long)a.Significand) + BitConverter.Int64BitsToDouble((long)b.Significand))));
        Measure("add", values, static (Float80 a, Float80 b, ref X87Arithmetic e) => ExtendedArithmetic.Add(a, b, ref e));
        Measure("multiply", values, static (Float80 a, Float80 b, ref X87Arithmetic e) => ExtendedArithmetic.Multiply(a, b, ref e));
        Measure("divide", values, static (Float80 a, Float80 b, ref X87Arithmetic e) => ExtendedArithmetic.Divide(a, b, ref e));
        Measure("sqrt", values, static (Float80 a, Float80 _, ref X87Arithmetic e) => ExtendedArithmetic.SquareRoot(a.Abs(), ref e));

        // A small loop body typical of compiled x87 code: load, arithmetic on the stack and memory, store.
        var asm = new Assembler(32);
        asm.fld(__qword_ptr[eax]);
        asm.fld1();
        asm.fadd(st0, st1);
        asm.fmul(__qword_ptr[eax]);
        asm.fdivrp(st1, st0);
        asm.fsqrt();
        asm.fcomi(st0, st0);
        asm.fstp(__qword_ptr[eax]);
        Instruction[] body = [.. asm.Instructions];
        var unit = new X87Unit();
        var memory = new FlatMemory();
        BitConverter.TryWriteBytes(memory.Bytes, 1.5);
        var ctx = new X87CpuContext { OperandSize32 = true };
        const int rounds = 200_000;
        var warm = Stopwatch.StartNew();
        while (warm.ElapsedMilliseconds < 500)
        {
            RunLoop(unit, memory, ref ctx, body, 1_000);
        }
        long allocated = GC.GetAllocatedBytesForCurrentThread();
        var sw = Stopwatch.StartNew();
        RunLoop(unit, memory, ref ctx, body, rounds);
        sw.Stop();
        allocated = GC.GetAllocatedBytesForCurrentThread() - allocated;
        long instructions = (long)rounds * body.Length;
        Console.WriteLine($"X87Unit.Execute: {instructions / sw.Elapsed.TotalSeconds / 1e6:F1} M instructions/s " +
            $"({sw.Elapsed.TotalNanoseconds / instructions:F0} ns each), {(double)allocated / instructions:F2} bytes allocated per instruction");
        return 0;
    }

    private static void RunLoop(X87Unit unit, FlatMemory memory, ref X87CpuContext ctx, Instruction[] body, int rounds)
    {
        for (int r = 0; r < rounds; r++)
        {
            BitConverter.TryWriteBytes(memory.Bytes, 1.5 + (r & 7));
            for (int i = 0; i < body.Length; i++)
            {
                unit.Execute(body[i], memory, ref ctx);
            }
        }
    }

    private delegate Float80 Operation(Float80 a, Float80 b, ref X87Arithmetic env);

    private static void Measure(string name, Float80[] values, Operation op)
    {
        const int n = 2_000_000;
        var env = new X87Arithmetic(X87Control.Default);
        Float80 sink = default;
        // Warm up long enough for tiered compilation to reach optimised code (its delay is ~100 ms).
        var warm = Stopwatch.StartNew();
        for (int i = 0; warm.ElapsedMilliseconds < 500; i++)
        {
            sink = op(values[i & 1023], values[(i * 7 + 3) & 1023], ref env);
        }
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < n; i++)
        {
            sink = op(values[i & 1023], values[(i * 7 + 3) & 1023], ref env);
        }
        sw.Stop();
        Console.WriteLine($"  {name,-9} {n / sw.Elapsed.TotalSeconds / 1e6,7:F1} M ops/s ({sw.Elapsed.TotalNanoseconds / n:F0} ns) [{sink.Significand & 1}]");
    }
}
