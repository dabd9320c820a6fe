package internal.ranker.client;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.security.Key;
import java.security.KeyStore;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;

/**
 * A certificate authority made for one test run with the JDK's keytool, a server certificate for
 * 127.0.0.1 and a client certificate, as PEM files: every certificate is real and none is
 * committed. Public for the tests of the example (internal.ranker.example).
 */
public final class TestPki {
  public static final String CLIENT_NAME = "backend-client";
  private static final String PASSWORD = "test-only";

  final Path dir;

  private TestPki(Path dir) {
    this.dir = dir;
  }

  public Path path(String name) {
    return dir.resolve(name);
  }

  public static TestPki create(Path dir) throws IOException, InterruptedException, GeneralSecurityException {
    TestPki p = new TestPki(dir);
    p.keytool("-genkeypair", "-alias", "ca", "-keystore", "ca.p12", "-dname", "CN=ranker test CA",
        "-ext", "bc:c", "-keyalg", "EC", "-groupname", "secp256r1", "-validity", "1");
    p.keytool("-exportcert", "-rfc", "-alias", "ca", "-keystore", "ca.p12", "-file", "ca.pem");
    p.leaf("server", "CN=ranker", "san=ip:127.0.0.1,dns:localhost", "eku=serverAuth");
    p.leaf("client", "CN=" + CLIENT_NAME, null, "eku=clientAuth");
    return p;
  }

  /** name.pem (signed by the CA) and name-key.pem (PKCS#8). */
  private void leaf(String name, String dname, String san, String eku)
      throws IOException, InterruptedException, GeneralSecurityException {
    String store = name + ".p12";
    keytool("-genkeypair", "-alias", name, "-keystore", store, "-dname", dname,
        "-keyalg", "EC", "-groupname", "secp256r1", "-validity", "1");
    keytool("-certreq", "-alias", name, "-keystore", store, "-file", name + ".csr");
    List<String> gencert = new ArrayList<>(List.of("-gencert", "-rfc", "-alias", "ca", "-keystore", "ca.p12",
        "-infile", name + ".csr", "-outfile", name + ".pem", "-validity", "1", "-ext", eku));
    if (san != null) {
      gencert.addAll(List.of("-ext", san));
    }
    keytool(gencert.toArray(String[]::new));
    KeyStore ks = KeyStore.getInstance("PKCS12");
    try (InputStream in = Files.newInputStream(path(store))) {
      ks.load(in, PASSWORD.toCharArray());
    }
    Key key = ks.getKey(name, PASSWORD.toCharArray());
    String pem = "-----BEGIN PRIVATE KEY-----\n"
        + Base64.getMimeEncoder(64, "\n".getBytes()).encodeToString(key.getEncoded())
        + "\n-----END PRIVATE KEY-----\n";
    Files.writeString(path(name + "-key.pem"), pem);
  }

  private void keytool(String... args) throws IOException, InterruptedException {
    List<String> command = new ArrayList<>();
    command.add(Path.of(System.getProperty("java.home"), "bin", "keytool").toString());
    command.addAll(List.of(args));
    command.addAll(List.of("-storetype", "PKCS12", "-storepass", PASSWORD, "-keypass", PASSWORD, "-noprompt"));
    Process p = new ProcessBuilder(command).directory(dir.toFile()).redirectErrorStream(true).start();
    String out = new String(p.getInputStream().readAllBytes());
    if (p.waitFor() != 0) {
      throw new IOException("keytool " + String.join(" ", args) + ":\n" + out);
    }
  }
}
