using System.Reflection;
using Iced.Intel;
using System.Reflection.Emit;
using System.Runtime.CompilerServices;
using Label = System.Reflection.Emit.Label;

namespace SecureVmm.Tcb.Cpu;

/// <summary>
/// A block compiled to host code. Returns <see cref="Cpu.BlockDone"/> when it ran to its end,
/// <see cref="Cpu.BlockEnded"/> when it ended early (an event, or the budget's end), or the index
/// of the instruction at which the run loop goes on interpreting the same block.
/// </summary>
internal delegate int CompiledBlock(Cpu cpu, DecodedInsn[] insns);

// Hot blocks compiled to host code. A cached block that has run CompileThreshold times is turned
// into one DynamicMethod that does, in order, what the run loop would do for each instruction.
// The everyday integer instructions are translated to IL on locals (Translator.cs). Any other
// instruction runs on the CPU's own state after the run loop's bookkeeping (count, EIP, ESP for
// fault roll-back) and before its event test: a specialized form (FastPaths.cs) left untranslated
// as a call of its parametric body (Op*) with the decoded operands as constants, which the .NET
// JIT inlines and folds, everything else as a call of its handler. The emitted code holds no
// guest bytes: it is chosen from the already decoded instruction list and reaches guest memory
// only through the same checked paths as the interpreter. A compiled block runs only when it fits the budget
// one count per instruction and no single-step or interrupt shadow asks for one instruction; a
// REP string instruction (one count per iteration) that leaves the rest beyond the budget hands
// the rest of the block back to the interpreter without a block boundary, as does a translated
// instruction that leaves by a side exit. So every exit, fault and interrupt happens at the same
// instruction count as in the interpreter: the same machine, only faster (tests/Cpu/
// CompiledBlockTests.cs compares the two; the Debian boot reaches its prompt at the same count).
public sealed partial class Cpu
{
    private int _compileThreshold = 16384;

    /// <summary>
    /// How many times a cached block runs interpreted before it is compiled to host code; 0 turns
    /// compilation off (every block is interpreted: the reference compiled blocks are tested
    /// against). Set it before running.
    /// </summary>
    public int CompileThreshold
    {
        get => _compileThreshold;
        set => _compileThreshold = Math.Max(0, value);
    }

    /// <summary>
    /// Whether hot blocks are compiled on a shared background thread (the run loop goes on
    /// interpreting them until their compiled form is ready) instead of on the VM's own thread
    /// before they next run. Either way a block behaves the same; the machine turns this on so that
    /// compiling, about a few milliseconds per block, does not stall the guest.
    /// </summary>
    public bool CompileInBackground { get; set; }

    private long _compiledBlocks;

    /// <summary>Blocks compiled so far (for benchmarks and tests).</summary>
    public long CompiledBlocks => Interlocked.Read(ref _compiledBlocks);

    private long _compileFailures;

    /// <summary>
    /// Hot blocks whose compilation failed (they stay interpreted, which is always correct). Zero
    /// unless the compiler has a bug; the tests require it, so that a shape the compiler gets wrong
    /// cannot hide behind the interpreter.
    /// </summary>
    public long CompileFailures => Interlocked.Read(ref _compileFailures);

    /// <summary>A block became hot: compile it now, or queue it for the background compiler.</summary>
    private void BlockIsHot(Block block)
    {
        if (!CompileInBackground)
        {
            block.Queued = true; // tried once, whatever the outcome
            if (TryCompile(block, this) is { } compiled)
            {
                block.Compiled = compiled;
                _compiledBlocks++;
            }
        }
        else if (BackgroundCompiler.TryQueue(block, this))
        {
            block.Queued = true;
        }
    }

    /// <summary>
    /// One low-priority thread shared by every CPU of the process compiles queued blocks. The queue
    /// is bounded: when it is full a hot block is simply offered again on a later run.
    /// </summary>
    private static class BackgroundCompiler
    {
        private const int MaxQueued = 256;
        private static readonly System.Collections.Concurrent.ConcurrentQueue<(Block Block, Cpu Cpu)> s_queue = new();
        private static readonly SemaphoreSlim s_ready = new(0);
        private static int s_queued;
        private static Thread? s_thread;
        private static readonly object s_start = new();

        public static bool TryQueue(Block block, Cpu cpu)
        {
            if (Interlocked.Increment(ref s_queued) > MaxQueued)
            {
                Interlocked.Decrement(ref s_queued);
                return false;
            }
            EnsureStarted();
            s_queue.Enqueue((block, cpu));
            s_ready.Release();
            return true;
        }

        private static void EnsureStarted()
        {
            if (Volatile.Read(ref s_thread) is not null)
            {
                return;
            }
            lock (s_start)
            {
                if (s_thread is null)
                {
                    var thread = new Thread(Work) { IsBackground = true, Name = "block compiler", Priority = ThreadPriority.BelowNormal };
                    thread.Start();
                    Volatile.Write(ref s_thread, thread);
                }
            }
        }

        private static void Work()
        {
            while (true)
            {
                s_ready.Wait();
                if (!s_queue.TryDequeue(out var item))
                {
                    continue;
                }
                Interlocked.Decrement(ref s_queued);
                if (TryCompile(item.Block, item.Cpu) is { } compiled)
                {
                    Volatile.Write(ref item.Block.Compiled, compiled);
                    Interlocked.Increment(ref item.Cpu._compiledBlocks);
                }
            }
        }
    }

    private static readonly MethodInfo s_jitBegin = Method(nameof(JitBegin));
    private static readonly MethodInfo s_jitEvent = Method(nameof(JitEvent));
    private static readonly MethodInfo s_jitEnd = Method(nameof(JitEnd));
    private static readonly MethodInfo s_jitGeneric = Method(nameof(JitGeneric));
    private static readonly MethodInfo s_jitAfterString = Method(nameof(JitAfterString));
    private static readonly FieldInfo s_eventField = typeof(Cpu).GetField(nameof(_event), BindingFlags.Instance | BindingFlags.NonPublic)!;
    private static readonly FieldInfo s_icountField = typeof(Cpu).GetField(nameof(_icount), BindingFlags.Instance | BindingFlags.NonPublic)!;
    private static readonly MethodInfo?[] s_opMethods = OpMethods();

    /// <summary>
    /// The parametric body (Op*) of each specialized form whose operands are all register numbers,
    /// immediates or conditions, indexed by <see cref="FastOp"/> number. The forms the translator
    /// leaves (near branches closing a block that is not translated whole, rotates) are of these;
    /// any other form runs through its handler.
    /// </summary>
    private static MethodInfo?[] OpMethods()
    {
        var methods = new MethodInfo?[FastOp.Count];
        foreach (var f in typeof(FastOp).GetFields(BindingFlags.Public | BindingFlags.Static))
        {
            if (f.Name is not (nameof(FastOp.None) or nameof(FastOp.Count))
                && typeof(Cpu).GetMethod("Op" + f.Name, BindingFlags.Instance | BindingFlags.NonPublic) is { } op
                && op.GetParameters().All(p => p.Name is "r0" or "imm" or "aux"))
            {
                methods[(byte)f.GetValue(null)!] = op;
            }
        }
        return methods;
    }

    /// <summary>
    /// Calls a form's parametric body with the instruction's operands as constants (register
    /// number, immediate, condition), so the JIT folds them into the code instead of reading the
    /// decoded instruction at run time.
    /// </summary>
    private static void EmitOpCall(ILGenerator il, MethodInfo op, ref DecodedInsn d)
    {
        il.Emit(OpCodes.Ldarg_1);
        foreach (var p in op.GetParameters())
        {
            il.Emit(OpCodes.Ldc_I4, p.Name switch
            {
                "r0" => d.Reg0 & 7,
                "imm" => unchecked((int)d.Imm),
                _ => d.Aux,
            });
        }
        il.Emit(OpCodes.Call, op);
    }

    private static MethodInfo Method(string name) =>
        typeof(Cpu).GetMethod(name, BindingFlags.Instance | BindingFlags.NonPublic)
        ?? throw new InvalidOperationException($"Cpu.{name} not found");

    /// <summary>
    /// Before an instruction that is not translated: the run loop's bookkeeping. The count moves by the instructions retired since the last such point (not
    /// set from the block's start: a REP string instruction counts each iteration).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void JitBegin(int retired, ref DecodedInsn d)
    {
        _icount += retired;
        _espAtStart = _gpr[4];
        _currentInsnEip = d.Eip;
        _eip = d.NextEip;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void JitGeneric(ref DecodedInsn d) => d.Handler(this, ref d);

    /// <summary>After the last instruction of a compiled block.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void JitEnd(int retired, uint eip)
    {
        _icount += retired;
        _eip = eip;
    }

    internal const int BlockDone = -1, BlockEnded = -2;

    /// <summary>
    /// After a string instruction, which counts one per iteration (Strings.cs): the compiled block
    /// was entered because its instructions fit the budget one count each, which no longer holds.
    /// Where the run loop would stop at the budget's end right here, stop (BlockEnded); where the
    /// rest of the block does not fit, retire this instruction and let the run loop interpret the
    /// rest of the same block (no block boundary, so no interrupt point the interpreter lacks).
    /// </summary>
    private int JitAfterString(int index, int remaining)
    {
        if (_icount + 1 + remaining <= _budgetEnd)
        {
            return BlockDone;
        }
        _icount++;
        return _icount >= _budgetEnd ? BlockEnded : index + 1;
    }

    /// <summary>An instruction raised an event: what the run loop does (see EndInstructionOnEvent).</summary>
    private void JitEvent(ref DecodedInsn d) => EndInstructionOnEvent(ref d, singleStep: false);

    /// <summary>
    /// Compiles a block and has the JIT compile the result (a call with no CPU: the emitted guard
    /// returns at once), so that nothing is left to do at its first real run. A failure leaves the
    /// block interpreted, which is always correct: compiling is only ever a speed-up, so no
    /// block shape a guest can produce may stop the VM or the process.
    /// </summary>
    private static CompiledBlock? TryCompile(Block block, Cpu cpu)
    {
        try
        {
            CompiledBlock compiled = CompileBlock(block);
            compiled(null!, null!);
            return compiled;
        }
#pragma warning disable CA1031 // any failure means: keep interpreting this block
        catch (Exception)
#pragma warning restore CA1031
        {
            Interlocked.Increment(ref cpu._compileFailures);
            return null;
        }
    }

    /// <summary>
    /// Compiles a cached block (whose decoded instructions never change once built); the block
    /// keeps the result until it is dropped. Touches no CPU state, so any thread may call it.
    /// </summary>
    private static CompiledBlock CompileBlock(Block block)
    {
        // The first parameter is the block itself, unused: a delegate closed over it is called
        // without the argument-shuffling stub that an open static delegate goes through.
        var method = new DynamicMethod("block_" + block.StartEip.ToString("X8", System.Globalization.CultureInfo.InvariantCulture),
            typeof(int), [typeof(Block), typeof(Cpu), typeof(DecodedInsn[])], typeof(Cpu), skipVisibility: true);
        var il = method.GetILGenerator();
        // Guard: called with no instructions (by the background compiler, to have it JIT-compiled), return.
        var body = il.DefineLabel();
        il.Emit(OpCodes.Ldarg_2);
        il.Emit(OpCodes.Brtrue, body);
        il.Emit(OpCodes.Ldc_I4, BlockDone);
        il.Emit(OpCodes.Ret);
        il.MarkLabel(body);
        var t = new Translation(il);
        t.LoadRegisters();
        if (TranslatedWhole(block))
        {
            EmitWhole(il, t, block);
        }
        else
        {
            EmitBlock(il, t, block);
        }
        t.EmitSideExits();
        return (CompiledBlock)method.CreateDelegate(typeof(CompiledBlock), block);
    }

    /// <summary>How a block translated whole ends: a near branch, a near CALL or RET (32-bit), or none (it goes on at the next instruction).</summary>
    private enum BlockEnd : byte { None, Jcc, Jmp, Call, Ret }

    private static BlockEnd EndOf(ref DecodedInsn last) => last.Fast switch
    {
        FastOp.Jcc => BlockEnd.Jcc,
        FastOp.JmpNear => BlockEnd.Jmp,
        _ => last.I.Code switch
        {
            Code.Call_rel32_32 => BlockEnd.Call,
            Code.Retnd or Code.Retnd_imm16 => BlockEnd.Ret,
            _ => BlockEnd.None,
        },
    };

    /// <summary>
    /// A block translated whole: every instruction, the closing one included unless it is a near
    /// branch, CALL or RET, which the block's end translates. Such a block that branches back to
    /// its own start loops inside the compiled method.
    /// </summary>
    private static bool TranslatedWhole(Block block)
    {
        ref DecodedInsn last = ref block.Insns[block.Count - 1];
        int body = EndOf(ref last) != BlockEnd.None ? block.Count - 1 : block.Count;
        for (int i = 0; i < body; i++)
        {
            if (Classify(ref block.Insns[i]) == Native.None)
            {
                return false;
            }
        }
        return true;
    }

    /// <summary>A block translated whole, from its loop head (the start it may branch back to) to its end.</summary>
    private static void EmitWhole(ILGenerator il, Translation t, Block block)
    {
        var head = il.DefineLabel();
        il.MarkLabel(head);
        t.StartLoopHead();
        var end = EndOf(ref block.Insns[block.Count - 1]);
        int body = end != BlockEnd.None ? block.Count - 1 : block.Count;
        for (int i = 0; i < body; i++)
        {
            if (!t.TryEmit(ref block.Insns[i], i))
            {
                throw new InvalidOperationException("a block translated whole holds an instruction that is not translated");
            }
        }
        t.EndWhole(block, end, head);
    }

    /// <summary>A block with instructions that are not translated: those run through their forms or handlers.</summary>
    private static void EmitBlock(ILGenerator il, Translation t, Block block)
    {
        int count = block.Count;
        bool eipCurrent = false;
        for (int i = 0; i < count; i++)
        {
            ref DecodedInsn d = ref block.Insns[i];
            if (t.TryEmit(ref d, i))
            {
                eipCurrent = false;
                continue;
            }
            // Any other instruction runs as before, on the CPU's registers and flags, with the run
            // loop's bookkeeping before it and its event test after it.
            t.Sync();
            il.Emit(OpCodes.Ldarg_1);
            il.Emit(OpCodes.Ldc_I4, i - t.Synced);
            EmitInsnRef(il, i);
            il.Emit(OpCodes.Call, s_jitBegin);
            t.Synced = i;
            if (d.Fast != FastOp.None && s_opMethods[d.Fast] is { } op)
            {
                EmitOpCall(il, op, ref d);
            }
            else
            {
                il.Emit(OpCodes.Ldarg_1);
                EmitInsnRef(il, i);
                il.Emit(OpCodes.Call, s_jitGeneric);
            }
            var next = il.DefineLabel();
            il.Emit(OpCodes.Ldarg_1);
            il.Emit(OpCodes.Ldfld, s_eventField);
            il.Emit(OpCodes.Brfalse, next);
            il.Emit(OpCodes.Ldarg_1);
            EmitInsnRef(il, i);
            il.Emit(OpCodes.Call, s_jitEvent);
            il.Emit(OpCodes.Ldc_I4, BlockEnded);
            il.Emit(OpCodes.Ret);
            il.MarkLabel(next);
            if (d.I.IsStringInstruction)
            {
                var goOn = il.DefineLabel();
                il.Emit(OpCodes.Ldarg_1);
                il.Emit(OpCodes.Ldc_I4, i);
                il.Emit(OpCodes.Ldc_I4, count - i - 1);
                il.Emit(OpCodes.Call, s_jitAfterString);
                il.Emit(OpCodes.Dup);
                il.Emit(OpCodes.Ldc_I4, BlockDone);
                il.Emit(OpCodes.Beq, goOn);
                il.Emit(OpCodes.Ret);
                il.MarkLabel(goOn);
                il.Emit(OpCodes.Pop);
            }
            t.LoadRegisters();
            eipCurrent = true;
        }

        t.Sync();
        il.Emit(OpCodes.Ldarg_1);
        if (eipCurrent)
        {
            // The last instruction set EIP itself (a branch, or its next EIP from JitBegin).
            il.Emit(OpCodes.Dup);
            il.Emit(OpCodes.Ldfld, s_icountField);
            il.Emit(OpCodes.Ldc_I4, count - t.Synced);
            il.Emit(OpCodes.Conv_I8);
            il.Emit(OpCodes.Add);
            il.Emit(OpCodes.Stfld, s_icountField);
        }
        else
        {
            il.Emit(OpCodes.Ldc_I4, count - t.Synced);
            il.Emit(OpCodes.Ldc_I4, unchecked((int)block.Insns[count - 1].NextEip));
            il.Emit(OpCodes.Call, s_jitEnd);
        }
        il.Emit(OpCodes.Ldc_I4, BlockDone);
        il.Emit(OpCodes.Ret);
    }

    private static void EmitInsnRef(ILGenerator il, int i)
    {
        il.Emit(OpCodes.Ldarg_2);
        il.Emit(OpCodes.Ldc_I4, i);
        il.Emit(OpCodes.Ldelema, typeof(DecodedInsn));
    }
}
