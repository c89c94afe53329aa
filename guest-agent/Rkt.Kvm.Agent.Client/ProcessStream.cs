using Google.Protobuf;
using Grpc.Core;
using Rkt.Kvm.Agent.V1;

namespace Rkt.Kvm.Agent.Client;

/// <summary>One piece of what a process sent: output bytes, or its exit (the last piece).</summary>
public readonly record struct ProcessOutput(bool IsStderr, ReadOnlyMemory<byte> Data, ExecExit? Exit);

/// <summary>
/// A live Exec or Attach call: input is sent as it comes (stdin bytes, end of stdin, terminal
/// sizes) and output is read as it arrives. Writes are serialised (gRPC allows one pending write),
/// so a stdin reader and a window-size handler can share one stream.
/// </summary>
public abstract class ProcessStream : IDisposable
{
    private readonly SemaphoreSlim _writing = new(1, 1);
    private bool _inputDone;

    private readonly AgentClient _client;

    private protected ProcessStream(AgentClient client) => _client = client;

    /// <summary>The call's name for error messages ("Exec", "Attach").</summary>
    private protected abstract string Method { get; }
    private protected abstract Task SendAsync(Input input);
    private protected abstract Task CompleteRequestsAsync();
    private protected abstract Task<ProcessOutput?> ReceiveAsync(CancellationToken cancellation);

    private protected readonly record struct Input(ReadOnlyMemory<byte>? Stdin, bool Close, TerminalSize? Resize);

    /// <summary>The kinds of input request Exec and Attach share.</summary>
    internal enum InputKind { Stdin, StdinClose, Resize }

    public Task WriteAsync(ReadOnlyMemory<byte> data) => data.IsEmpty ? Task.CompletedTask : Send(new Input(data, false, null));

    /// <summary>End of input: a pipe closes (the process reads EOF), a terminal gets its end-of-file character.</summary>
    public Task CloseStdinAsync() => Send(new Input(null, true, null));

    public Task ResizeAsync(uint rows, uint columns) => Send(new Input(null, false, new TerminalSize { Rows = rows, Columns = columns }));

    /// <summary>No more input of any kind (the request stream ends; for Exec that also closes stdin).</summary>
    public async Task CompleteInputAsync()
    {
        await _writing.WaitAsync().ConfigureAwait(false);
        try
        {
            if (_inputDone) return;
            _inputDone = true;
            await CompleteRequestsAsync().ConfigureAwait(false);
        }
        catch (RpcException) { /* the call is over */ }
        finally { _writing.Release(); }
    }

    private async Task Send(Input input)
    {
        await _writing.WaitAsync().ConfigureAwait(false);
        try
        {
            if (!_inputDone) await SendAsync(input).ConfigureAwait(false);
        }
        catch (RpcException) { /* the call ended: the output side reports why */ }
        catch (InvalidOperationException) { /* the request stream was completed by the call's end */ }
        finally { _writing.Release(); }
    }

    /// <summary>The next output, or null when the call ended without an exit (then an error was thrown instead).</summary>
    public async Task<ProcessOutput?> ReadAsync(CancellationToken cancellation = default)
    {
        try { return await ReceiveAsync(cancellation).ConfigureAwait(false); }
        catch (RpcException e) { throw _client.Describe(e, Method); }
    }

    /// <summary>Copies output to <paramref name="stdout"/> and <paramref name="stderr"/> as it arrives (flushing each piece)
    /// and returns the exit; an <see cref="AgentException"/> when the call ended without one.</summary>
    public async Task<ExecExit> CopyOutputAsync(Stream stdout, Stream stderr, CancellationToken cancellation = default)
    {
        while (await ReadAsync(cancellation).ConfigureAwait(false) is { } output)
        {
            if (output.Exit is { } exit) return exit;
            var sink = output.IsStderr ? stderr : stdout;
            await sink.WriteAsync(output.Data, cancellation).ConfigureAwait(false);
            await sink.FlushAsync(cancellation).ConfigureAwait(false);
        }
        throw new AgentException(AgentFailure.Failed, $"{Method}: the agent ended the call without an exit status.");
    }

    /// <summary>The shell's convention for an exit: the code, or 128 + the signal that killed it.</summary>
    public static int ExitCode(ExecExit exit) => exit.Signal != 0 ? 128 + exit.Signal : exit.ExitCode;

    public abstract void Dispose();
}

/// <summary>A <see cref="ProcessStream"/> over one duplex call whose replies are <see cref="ExecReply"/> (Exec's
/// and Attach's); <paramref name="encode"/> makes the call's own input requests.</summary>
internal sealed class CallStream<TRequest>(AgentClient client, AsyncDuplexStreamingCall<TRequest, ExecReply> call, string method,
    Func<ProcessStream.InputKind, ByteString?, TerminalSize?, TRequest> encode) : ProcessStream(client)
{
    private protected override string Method => method;

    private protected override Task SendAsync(Input input) => call.RequestStream.WriteAsync(
        input.Stdin is { } data ? encode(InputKind.Stdin, ByteString.CopyFrom(data.Span), null)
        : input.Close ? encode(InputKind.StdinClose, null, null)
        : encode(InputKind.Resize, null, input.Resize));

    private protected override Task CompleteRequestsAsync() => call.RequestStream.CompleteAsync();

    private protected override async Task<ProcessOutput?> ReceiveAsync(CancellationToken cancellation)
    {
        while (await call.ResponseStream.MoveNext(cancellation).ConfigureAwait(false))
        {
            var reply = call.ResponseStream.Current;
            switch (reply.KindCase)
            {
                case ExecReply.KindOneofCase.Stdout: return new ProcessOutput(false, reply.Stdout.Memory, null);
                case ExecReply.KindOneofCase.Stderr: return new ProcessOutput(true, reply.Stderr.Memory, null);
                case ExecReply.KindOneofCase.Exit: return new ProcessOutput(false, default, reply.Exit);
            }
        }
        return null;
    }

    public override void Dispose() => call.Dispose();
}
