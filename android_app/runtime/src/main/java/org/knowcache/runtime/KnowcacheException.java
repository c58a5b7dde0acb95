package org.knowcache.runtime;

/**
 * Base class of every error the knowcache runtime throws; the message is the
 * C++ core's sentence saying what to fix. The subclasses mirror the Python
 * runtime's ({@code knowcache.runtime.KnowcacheError} and its subclasses) and
 * are thrown only by the JNI layer (runtime_cpp/bindings/jni/status_jni.cc).
 * An internal core error is thrown as this base class.
 */
public class KnowcacheException extends RuntimeException {
  public KnowcacheException(String message) {
    super(message);
  }

  /** Bad input or configuration: wrong shape, dtype, threshold... (Python: InvalidInputError). */
  public static class InvalidInputException extends KnowcacheException {
    public InvalidInputException(String message) {
      super(message);
    }
  }

  /** A file, partition or manifest entry does not exist (Python: NotFoundError). */
  public static class NotFoundException extends KnowcacheException {
    public NotFoundException(String message) {
      super(message);
    }
  }

  /** Bytes failed verification: sha256, size, .pte parse (Python: CorruptPartitionError). */
  public static class CorruptPartitionException extends KnowcacheException {
    public CorruptPartitionException(String message) {
      super(message);
    }
  }

  /** The cloud could not be reached (Python: CloudUnavailableError). */
  public static class CloudUnavailableException extends KnowcacheException {
    public CloudUnavailableException(String message) {
      super(message);
    }
  }

  /** The cloud did not answer in time (Python: CloudTimeoutError). */
  public static class CloudTimeoutException extends KnowcacheException {
    public CloudTimeoutException(String message) {
      super(message);
    }
  }

  /** A slot, byte budget or size limit would be exceeded (Python: ResourceExhaustedError). */
  public static class ResourceExhaustedException extends KnowcacheException {
    public ResourceExhaustedException(String message) {
      super(message);
    }
  }

  /** The call is not allowed in the current state (Python: FailedPreconditionError). */
  public static class FailedPreconditionException extends KnowcacheException {
    public FailedPreconditionException(String message) {
      super(message);
    }
  }

  /** A peer answered something unintelligible (Python: ProtocolError). */
  public static class ProtocolException extends KnowcacheException {
    public ProtocolException(String message) {
      super(message);
    }
  }
}
